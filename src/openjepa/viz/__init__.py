"""Visualisation: training curves, multi-block masks, PCA feature maps and retrieval grids.

Modules by figure family: ``curves`` (training curves, kNN curves), ``masks``, ``pca``, ``retrieval``;
``_figure`` holds what they share (Agg figures, PNG output, patch-grid geometry, image conversion).
"""

from ._figure import IMAGENET_MEAN, IMAGENET_STD, TARGET_COLORS, denormalize
from .curves import (
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    ema_smooth,
    plot_knn_curves,
    plot_training_curves,
    read_metrics_csv,
)
from .masks import mask_overlay, plot_masks
from .pca import pca_rgb, plot_pca_maps
from .retrieval import plot_retrieval_grid

__all__ = [
    "plot_training_curves",
    "plot_knn_curves",
    "read_metrics_csv",
    "ema_smooth",
    "plot_masks",
    "mask_overlay",
    "pca_rgb",
    "plot_pca_maps",
    "plot_retrieval_grid",
    "denormalize",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "REQUIRED_COLUMNS",
    "OPTIONAL_COLUMNS",
    "TARGET_COLORS",
]
