"""PCA feature maps: the top-3 principal components of patch features shown as RGB beside each image."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ._figure import _check_grid, _hide_ticks, _new_figure, _pixel_patch_map, _save, denormalize


def pca_rgb(
    patch_features: torch.Tensor, grid: tuple[int, int], percentile: float = 1.0, min_var_ratio: float = 1e-2
) -> np.ndarray:
    """Top-3 PCA of all patch tokens of the batch as RGB: (B, N, D) -> (B, H, W, 3) in [0, 1]."""
    gh, gw = _check_grid(grid)
    if patch_features.ndim != 3:
        raise ValueError(f"expected patch features of shape (B, N, D), got {tuple(patch_features.shape)}")
    b, n, d = patch_features.shape
    if n != gh * gw:
        raise ValueError(f"{n} tokens do not match a {gh}x{gw} grid ({gh * gw}); drop any CLS or register tokens first")
    # float64 + an exact eigendecomposition of the D x D covariance: deterministic (unlike
    # pca_lowrank's random projections) and cheap for ViT widths.
    x = patch_features.detach().to("cpu", torch.float64).reshape(b * n, d)
    x = x - x.mean(dim=0, keepdim=True)
    cov = x.T @ x / max(b * n - 1, 1)
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    k = min(3, d)
    evals, evecs = evals.flip(0)[:k].clamp_min(0), evecs.flip(1)[:, :k]
    # Eigenvectors have arbitrary sign; fixing it makes colours reproducible across calls.
    flip = torch.sign(evecs[evecs.abs().argmax(dim=0), torch.arange(k)])
    evecs = evecs * torch.where(flip == 0, torch.ones_like(flip), flip)
    proj = (x @ evecs).numpy()

    rgb = np.full((b * n, 3), 0.5)
    top = float(evals[0]) if k else 0.0
    for j in range(k):
        # Per-component scaling stretches whatever a component holds to the full colour range; for
        # components carrying almost no variance that would paint pure noise, so they stay grey.
        if top <= 0 or float(evals[j]) < min_var_ratio * top:
            continue
        lo, hi = np.percentile(proj[:, j], [percentile, 100.0 - percentile])
        if hi - lo <= 1e-12 * max(abs(hi), abs(lo), 1.0):
            continue
        rgb[:, j] = np.clip((proj[:, j] - lo) / (hi - lo), 0.0, 1.0)
    return rgb.reshape(b, gh, gw, 3)


def plot_pca_maps(
    images: torch.Tensor,
    patch_features: torch.Tensor,
    grid: tuple[int, int],
    out_png: str | Path,
    max_images: int = 8,
    dpi: int = 120,
    center_positions: bool = False,
) -> Path:
    """Each image beside the RGB map of its patch features' top-3 principal components.

    center_positions: subtract each grid position's mean feature over the batch first, so the
    components show what varies with image content rather than the position signal every image shares.
    """
    gh, gw = _check_grid(grid)
    if images.shape[0] != patch_features.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {patch_features.shape[0]} feature maps")
    if center_positions:
        patch_features = patch_features - patch_features.mean(dim=0, keepdim=True)
    # Fit on the whole batch (not only the drawn images) so colours mean the same across panels.
    maps = pca_rgb(patch_features, (gh, gw))
    n = min(int(images.shape[0]), int(max_images))
    imgs = denormalize(images[:n])
    pmap = _pixel_patch_map(imgs.shape[1:3], (gh, gw))

    pairs_per_row = min(n, 4)
    nrows = math.ceil(n / pairs_per_row)
    fig = _new_figure((2 * pairs_per_row * 2.3, nrows * 2.5 + 0.6))
    for i in range(n):
        r, c = divmod(i, pairs_per_row)
        ax_img = fig.add_subplot(nrows, 2 * pairs_per_row, r * 2 * pairs_per_row + 2 * c + 1)
        ax_pca = fig.add_subplot(nrows, 2 * pairs_per_row, r * 2 * pairs_per_row + 2 * c + 2)
        ax_img.imshow(imgs[i], interpolation="nearest")
        # Nearest upsampling through the pixel->patch map: each patch becomes one flat block that
        # lines up exactly with the image pixels it covers.
        ax_pca.imshow(maps[i].reshape(gh * gw, 3)[pmap], interpolation="nearest")
        ax_img.set_title(f"image {i}", fontsize=9)
        ax_pca.set_title("PCA of patch features", fontsize=8)
        _hide_ticks(ax_img)
        _hide_ticks(ax_pca)
    centred = ", each position's mean removed" if center_positions else ""
    fig.suptitle(
        f"patch features, top-3 principal components as RGB ({gh}x{gw} grid, "
        f"fit on {patch_features.shape[0]} images{centred})",
        fontsize=11,
    )
    fig.subplots_adjust(left=0.02, right=0.98, top=1 - 0.5 / fig.get_figheight(), bottom=0.05, wspace=0.05, hspace=0.3)
    return _save(fig, out_png, dpi)
