"""Multi-block masks drawn on images: context kept bright, the rest dimmed, targets tinted and outlined."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from matplotlib.collections import LineCollection
from matplotlib.patches import Patch

from ._figure import (
    CONTEXT_EDGE_COLOR,
    TARGET_COLORS,
    ImageLike,
    _as_index_array,
    _check_grid,
    _hide_ticks,
    _new_figure,
    _patch_edges,
    _pixel_patch_map,
    _save,
    _to_float_image,
    denormalize,
)


def mask_overlay(
    image: ImageLike,
    context: Any,
    targets: Sequence[Any],
    grid: tuple[int, int],
    colors: Sequence[Sequence[float]] | None = None,
    dim: float = 0.3,
    alpha: float = 0.55,
) -> np.ndarray:
    """Float (H, W, 3) image in [0, 1]: context as is, other pixels dimmed, targets tinted."""
    gh, gw = _check_grid(grid)
    img = _to_float_image(image)
    colors = list(colors) if colors is not None else list(TARGET_COLORS)
    pmap = _pixel_patch_map(img.shape[:2], (gh, gw))
    ctx = np.isin(pmap, _as_index_array(context, gh * gw))
    # Dimming, not blanking, keeps the scene readable while making clear what the encoder never sees.
    out = np.where(ctx[..., None], img, img * dim)
    tinted = np.zeros(pmap.shape, dtype=bool)
    for k, tgt in enumerate(targets):
        sel = np.isin(pmap, _as_index_array(tgt, gh * gw))
        color = np.asarray(colors[k % len(colors)], dtype=np.float64)[:3]
        # Tint the undimmed pixels: the target content itself should stay visible under the colour.
        # Pixels already tinted by an earlier target are blended again, so overlaps show a mix.
        src = np.where(tinted[..., None], out, img)
        out = np.where(sel[..., None], (1.0 - alpha) * src + alpha * color, out)
        tinted |= sel
    return np.clip(out, 0.0, 1.0)


def _outline_segments(
    idx: np.ndarray, grid: tuple[int, int], img_hw: tuple[int, int]
) -> list[list[tuple[float, float]]]:
    """Line segments (pixel coordinates) of the boundary of a set of patches."""
    gh, gw = grid
    inside = np.zeros((gh, gw), dtype=bool)
    inside.flat[idx] = True
    ys, xs = _patch_edges(img_hw[0], gh), _patch_edges(img_hw[1], gw)
    padded = np.pad(inside, 1)
    segs: list[list[tuple[float, float]]] = []
    # An edge is on the boundary where a patch in the set borders one outside it (or the image edge);
    # tracing edges rather than a bounding box stays correct for truncated, non-rectangular masks.
    for r, c in zip(*np.nonzero(inside)):
        y0, y1, x0, x1 = ys[r], ys[r + 1], xs[c], xs[c + 1]
        if not padded[r, c + 1]:
            segs.append([(x0, y0), (x1, y0)])
        if not padded[r + 2, c + 1]:
            segs.append([(x0, y1), (x1, y1)])
        if not padded[r + 1, c]:
            segs.append([(x0, y0), (x0, y1)])
        if not padded[r + 1, c + 2]:
            segs.append([(x1, y0), (x1, y1)])
    return segs


def _row_indices(mask: torch.Tensor | np.ndarray, b: int) -> Any:
    """Indices of image b in a (B, K) mask, or the shared indices of a 1-D mask."""
    return mask if mask.ndim == 1 else mask[b]


def plot_masks(
    images: torch.Tensor,
    masks_enc: list[torch.Tensor],
    masks_pred: list[torch.Tensor],
    grid: tuple[int, int],
    out_png: str | Path,
    max_images: int = 8,
    dpi: int = 120,
) -> Path:
    """Each image beside its context (bright) and target blocks (tinted, outlined), as in I-JEPA Fig. 1."""
    gh, gw = _check_grid(grid)
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    if not masks_enc:
        raise ValueError("masks_enc must hold at least one context mask")
    n = min(int(images.shape[0]), int(max_images))
    for mk in list(masks_enc) + list(masks_pred):
        if mk.ndim == 2 and mk.shape[0] < n:
            raise ValueError(f"a mask has batch size {mk.shape[0]} but {n} images are drawn")
    imgs = denormalize(images[:n])
    h, w = imgs.shape[1:3]

    pairs_per_row = min(n, 4)
    nrows = math.ceil(n / pairs_per_row)
    fig = _new_figure((2 * pairs_per_row * 2.3, nrows * 2.5 + 0.9))
    for b in range(n):
        r, c = divmod(b, pairs_per_row)
        ax_img = fig.add_subplot(nrows, 2 * pairs_per_row, r * 2 * pairs_per_row + 2 * c + 1)
        ax_msk = fig.add_subplot(nrows, 2 * pairs_per_row, r * 2 * pairs_per_row + 2 * c + 2)
        ax_img.imshow(imgs[b], interpolation="nearest")
        ax_img.set_title(f"image {b}", fontsize=9)

        # Several context masks (multi-context variants) are shown as their union.
        ctx = np.unique(np.concatenate([_as_index_array(_row_indices(mk, b), gh * gw) for mk in masks_enc]))
        tgts = [_as_index_array(_row_indices(mk, b), gh * gw) for mk in masks_pred]
        ax_msk.imshow(mask_overlay(imgs[b], ctx, tgts, (gh, gw)), interpolation="nearest")
        ax_msk.add_collection(
            LineCollection(
                _outline_segments(ctx, (gh, gw), (h, w)),
                colors=[CONTEXT_EDGE_COLOR],
                linewidths=1.2,
                linestyles="dashed",
            )
        )
        for k, t in enumerate(tgts):
            ax_msk.add_collection(
                LineCollection(
                    _outline_segments(t, (gh, gw), (h, w)),
                    colors=[TARGET_COLORS[k % len(TARGET_COLORS)]],
                    linewidths=1.6,
                )
            )
        ax_msk.set_xlim(-0.5, w - 0.5)
        ax_msk.set_ylim(h - 0.5, -0.5)
        ax_msk.set_title(f"context {len(ctx)} / targets " + ",".join(str(len(t)) for t in tgts), fontsize=8)
        _hide_ticks(ax_img)
        _hide_ticks(ax_msk)

    handles = [
        Patch(facecolor="white", edgecolor="black", ls="--", label="context (encoder input)"),
        Patch(facecolor="0.3", edgecolor="black", label="neither (dimmed)"),
    ]
    handles += [
        Patch(facecolor=TARGET_COLORS[k % len(TARGET_COLORS)], alpha=0.7, label=f"target {k + 1}")
        for k in range(len(masks_pred))
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    fig.suptitle(f"I-JEPA multi-block masks ({gh}x{gw} patch grid)", fontsize=12)
    fig.subplots_adjust(
        left=0.02,
        right=0.98,
        top=1 - 0.55 / fig.get_figheight(),
        bottom=0.5 / fig.get_figheight(),
        wspace=0.05,
        hspace=0.3,
    )
    return _save(fig, out_png, dpi)
