"""Shared figure plumbing for openjepa.viz: Agg figures, PNG output, patch-grid geometry, image conversion.

Every figure is a bare `matplotlib.figure.Figure` drawn on an Agg canvas: no pyplot, so nothing
opens a window, nothing leaks into pyplot's global figure list, and it is safe on headless nodes
and inside worker threads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Set1-like hues: saturated and mutually distinct, so four overlapping targets stay tellable apart.
TARGET_COLORS = (
    (0.89, 0.10, 0.11),
    (0.22, 0.49, 0.72),
    (0.30, 0.69, 0.29),
    (1.00, 0.50, 0.00),
    (0.60, 0.31, 0.64),
    (1.00, 1.00, 0.20),
    (0.65, 0.34, 0.16),
    (0.97, 0.51, 0.75),
)
CONTEXT_EDGE_COLOR = (1.0, 1.0, 1.0)

ImageLike = Any  # np.ndarray (H, W[, C]), PIL.Image.Image or a (C, H, W) / (H, W, C) torch.Tensor


def _new_figure(figsize: tuple[float, float]) -> Figure:
    """A pyplot-free figure with an Agg canvas attached."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out_png: str | Path, dpi: int) -> Path:
    """Write the figure as PNG (creating parent folders) and return the path."""
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, format="png", facecolor="white")
    return out


def _check_grid(grid: Sequence[int]) -> tuple[int, int]:
    """Validate an (H, W) patch grid."""
    if len(grid) != 2 or int(grid[0]) <= 0 or int(grid[1]) <= 0:
        raise ValueError(f"grid must be (H, W) with positive sizes, got {grid!r}")
    return int(grid[0]), int(grid[1])


def _pixel_patch_map(img_hw: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """(h, w) array giving, for each pixel, the flat index of the patch that covers it."""
    h, w = img_hw
    gh, gw = grid
    # Integer floor division instead of `h // gh` patch sizes keeps every pixel assigned even when
    # the image size is not a multiple of the grid (e.g. a resized preview).
    rows = (np.arange(h) * gh) // h
    cols = (np.arange(w) * gw) // w
    return rows[:, None] * gw + cols[None, :]


def _patch_edges(n_pixels: int, n_patches: int) -> np.ndarray:
    """Pixel-coordinate boundaries (imshow convention) of the patches along one axis."""
    # Inverse of the floor map above: patch r starts at the first pixel p with p*n_patches//n >= r.
    starts = np.ceil(np.arange(n_patches + 1) * n_pixels / n_patches)
    return starts - 0.5


def _as_index_array(idx: Any, n_patches: int) -> np.ndarray:
    """Flat patch indices as a 1-D int64 array, checked against the grid size."""
    arr = idx.detach().cpu().numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx)
    arr = arr.astype(np.int64).reshape(-1)
    if arr.size and (arr.min() < 0 or arr.max() >= n_patches):
        raise ValueError(
            f"mask indices must lie in [0, {n_patches}) for this grid, got range [{arr.min()}, {arr.max()}]"
        )
    return arr


def _to_float_image(image: ImageLike) -> np.ndarray:
    """Any supported image as a float (H, W, 3) array in [0, 1]."""
    if isinstance(image, torch.Tensor):
        arr = image.detach().cpu().float().numpy()
        if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
            arr = arr.transpose(1, 2, 0)  # tensors are conventionally channels-first
    else:
        arr = np.asarray(image)  # PIL images convert through the array interface
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an image of shape (H, W), (H, W, 1|3|4) or (1|3|4, H, W), got {tuple(arr.shape)}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    arr = arr[..., :3]  # drop alpha: figures are drawn on white anyway
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        return arr.astype(np.float64) / (1.0 if arr.dtype == np.bool_ else 255.0)
    return np.clip(arr.astype(np.float64), 0.0, 1.0)


def _hide_ticks(ax: Any) -> None:
    """Image panels need no tick marks."""
    ax.set_xticks([])
    ax.set_yticks([])


def denormalize(
    images: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> np.ndarray:
    """Undo per-channel normalisation: (B, 3, H, W) or (3, H, W) tensor -> (B, H, W, 3) uint8."""
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[1] != len(mean):
        raise ValueError(f"expected images of shape (B, {len(mean)}, H, W), got {tuple(images.shape)}")
    x = images.detach().to("cpu", torch.float32)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    # Round (not truncate) so that normalise -> denormalise reproduces uint8 inputs exactly.
    x = (x * s + m).mul(255.0).round().clamp(0, 255)
    return x.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
