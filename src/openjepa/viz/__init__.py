"""Visualisation: training curves, multi-block masks, PCA feature maps and retrieval grids."""

from .plots import (IMAGENET_MEAN, IMAGENET_STD, OPTIONAL_COLUMNS, REQUIRED_COLUMNS, TARGET_COLORS,
                    denormalize, ema_smooth, mask_overlay, pca_rgb, plot_knn_curves, plot_masks, plot_pca_maps,
                    plot_retrieval_grid, plot_training_curves, read_metrics_csv)

__all__ = [
    "plot_training_curves", "plot_knn_curves", "read_metrics_csv", "ema_smooth", "plot_masks", "mask_overlay",
    "pca_rgb", "plot_pca_maps", "plot_retrieval_grid", "denormalize", "IMAGENET_MEAN",
    "IMAGENET_STD", "REQUIRED_COLUMNS", "OPTIONAL_COLUMNS", "TARGET_COLORS",
]
