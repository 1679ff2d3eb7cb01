"""Figures for I-JEPA runs: training curves, multi-block masks, PCA feature maps, retrieval grids.

Every figure is a bare `matplotlib.figure.Figure` drawn on an Agg canvas: no pyplot, so nothing
opens a window, nothing leaks into pyplot's global figure list, and it is safe on headless nodes
and inside worker threads.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.patches import Patch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

REQUIRED_COLUMNS = ("step", "epoch", "loss", "lr", "wd", "momentum", "imgs_per_s")
OPTIONAL_COLUMNS = ("target_std", "rankme", "knn_top1")

# Set1-like hues: saturated and mutually distinct, so four overlapping targets stay tellable apart.
TARGET_COLORS = ((0.89, 0.10, 0.11), (0.22, 0.49, 0.72), (0.30, 0.69, 0.29), (1.00, 0.50, 0.00),
                 (0.60, 0.31, 0.64), (1.00, 1.00, 0.20), (0.65, 0.34, 0.16), (0.97, 0.51, 0.75))
CONTEXT_EDGE_COLOR = (1.0, 1.0, 1.0)

ImageLike = Any  # np.ndarray (H, W[, C]), PIL.Image.Image or a (C, H, W) / (H, W, C) torch.Tensor


# ----------------------------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------------------------

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
        raise ValueError(f"mask indices must lie in [0, {n_patches}) for this grid, "
                         f"got range [{arr.min()}, {arr.max()}]")
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
        raise ValueError(f"expected an image of shape (H, W), (H, W, 1|3|4) or (1|3|4, H, W), "
                         f"got {tuple(arr.shape)}")
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


def denormalize(images: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
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


# ----------------------------------------------------------------------------------------------
# 1. training curves
# ----------------------------------------------------------------------------------------------

def read_metrics_csv(metrics_csv: str | Path) -> dict[str, np.ndarray]:
    """Parse a metrics CSV into float columns (empty cells -> NaN), checking the required columns."""
    path = Path(metrics_csv)
    with path.open(newline="") as f:
        reader = csv.reader(f, skipinitialspace=True)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"metrics CSV {path} is empty (no header)")
        header = [h.strip() for h in header]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ValueError(f"metrics CSV {path} is missing required column(s): "
                             f"{', '.join(missing)} (has: {', '.join(header)})")
        keep = {name: i for i, name in enumerate(header) if name in REQUIRED_COLUMNS + OPTIONAL_COLUMNS}
        cols: dict[str, list[float]] = {name: [] for name in keep}
        for line_no, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue  # blank lines, e.g. a trailing newline after an interrupted run
            for name, i in keep.items():
                cell = row[i].strip() if i < len(row) else ""
                try:
                    cols[name].append(float(cell) if cell else math.nan)
                except ValueError:
                    raise ValueError(f"metrics CSV {path}, line {line_no}: column {name!r} has "
                                     f"non-numeric value {cell!r}") from None
    out = {name: np.asarray(values, dtype=np.float64) for name, values in cols.items()}
    if out["step"].size == 0:
        raise ValueError(f"metrics CSV {path} has a header but no rows")
    # Resumed runs can append rows out of order; a stable sort keeps the later duplicate last.
    order = np.argsort(out["step"], kind="stable")
    return {name: values[order] for name, values in out.items()}


def ema_smooth(values: np.ndarray, window: float) -> np.ndarray:
    """Bias-corrected exponential moving average that skips NaNs (NaN in -> NaN out)."""
    values = np.asarray(values, dtype=np.float64)
    alpha = 2.0 / (max(float(window), 1.0) + 1.0)
    out = np.full_like(values, np.nan)
    acc, weight = 0.0, 0.0
    for i, v in enumerate(values):
        if not math.isfinite(v):
            continue
        acc = (1.0 - alpha) * acc + alpha * v
        weight = (1.0 - alpha) * weight + alpha
        # Dividing by the accumulated weight removes the pull towards 0 at the start of the run.
        out[i] = acc / weight
    return out


def _plot_series(ax: Any, x: np.ndarray, y: np.ndarray, label: str, color: str,
                 sparse_markers: bool = True) -> bool:
    """Plot the finite points of y vs x; markers when the series is sparse. False if nothing to draw."""
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return False
    marker = "o" if sparse_markers and ok.sum() <= 60 else None
    ax.plot(x[ok], y[ok], color=color, lw=1.4, marker=marker, ms=3.5, label=label)
    return True


def _style(ax: Any, title: str, ylabel: str, xlabel: str = "step") -> None:
    """Title, axis labels and a light grid for one panel."""
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(True, which="major", alpha=0.35)
    ax.tick_params(labelsize=8)


def plot_training_curves(metrics_csv: str | Path, out_png: str | Path, dpi: int = 120) -> Path:
    """Loss, schedules, throughput and (if logged) collapse indicators / kNN accuracy vs step."""
    m = read_metrics_csv(metrics_csv)
    step = m["step"]

    def present(name: str) -> bool:
        return name in m and bool(np.isfinite(m[name]).any())

    # Small panels under the loss: the three schedules always, then whatever was measured.
    panels: list[tuple[str, str, str, str]] = [  # (column, title, y label, colour)
        ("lr", "learning rate", "lr", "tab:blue"),
        ("wd", "weight decay", "wd", "tab:orange"),
        ("momentum", "EMA momentum (target encoder)", "momentum", "tab:green"),
        ("imgs_per_s", "throughput", "images / s", "tab:gray"),
    ]
    optional = [("target_std", "target feature std (collapse if -> 0)", "std", "tab:red"),
                ("rankme", "RankMe effective rank (collapse if low)", "rank", "tab:purple"),
                ("knn_top1", "kNN top-1 accuracy", "top-1", "tab:brown")]
    panels += [p for p in optional if present(p[0])]

    ncols = 3
    nrows_small = math.ceil(len(panels) / ncols)
    fig = _new_figure((13.0, 3.6 + 2.7 * nrows_small))
    gs = fig.add_gridspec(1 + nrows_small, ncols, height_ratios=[1.35] + [1.0] * nrows_small,
                          hspace=0.6, wspace=0.28, left=0.07, right=0.98,
                          top=1 - 0.75 / fig.get_figheight(), bottom=0.55 / fig.get_figheight())

    ax_loss = fig.add_subplot(gs[0, :])
    loss = m["loss"]
    finite = np.isfinite(loss) & np.isfinite(step)
    if finite.any():
        ax_loss.plot(step[finite], loss[finite], color="tab:blue", alpha=0.35, lw=0.9, label="loss")
        # Window ~5% of the logged points: enough to read the trend, short enough to show spikes.
        window = max(1.0, finite.sum() / 20.0)
        ax_loss.plot(step[finite], ema_smooth(loss[finite], window), color="tab:blue", lw=2.0,
                     label=f"loss (EMA, window {window:.0f})")
        # A log axis cannot show zero or negative values; fall back to linear rather than drop them.
        if (loss[finite] > 0).all():
            ax_loss.set_yscale("log")
        # Epoch boundaries help relate the curve to the schedules, but clutter long runs.
        epoch = m["epoch"]
        ok = np.isfinite(epoch)
        changes = np.flatnonzero(np.diff(epoch[ok]) != 0) + 1
        if 0 < len(changes) <= 40:
            for s in step[ok][changes]:
                ax_loss.axvline(s, color="0.6", lw=0.6, ls=":", zorder=0)
        ax_loss.legend(fontsize=8, loc="upper right")
    else:
        ax_loss.text(0.5, 0.5, "no finite loss values", ha="center", va="center",
                     transform=ax_loss.transAxes)
    _style(ax_loss, "training loss (dotted lines: epoch boundaries)", "loss")
    ax_loss.grid(True, which="minor", alpha=0.15)

    for k, (name, title, ylabel, color) in enumerate(panels):
        ax = fig.add_subplot(gs[1 + k // ncols, k % ncols], sharex=ax_loss)
        if not _plot_series(ax, step, m[name], name, color):
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        # Momentum lives in [0.996, 1]: an offset formatter would print unreadable "+9.96e-1" ticks.
        ax.ticklabel_format(axis="y", useOffset=False)
        if name in ("lr", "wd"):
            # Schedules span decades of small values; scientific ticks keep the labels short.
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        _style(ax, title, ylabel)
    fig.suptitle(f"training curves: {Path(metrics_csv).name}", fontsize=12)
    return _save(fig, out_png, dpi)


# ----------------------------------------------------------------------------------------------
# 2. masks
# ----------------------------------------------------------------------------------------------

def mask_overlay(image: ImageLike, context: Any, targets: Sequence[Any], grid: tuple[int, int],
                 colors: Sequence[Sequence[float]] | None = None, dim: float = 0.3,
                 alpha: float = 0.55) -> np.ndarray:
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


def _outline_segments(idx: np.ndarray, grid: tuple[int, int],
                      img_hw: tuple[int, int]) -> list[list[tuple[float, float]]]:
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


def plot_masks(images: torch.Tensor, masks_enc: list[torch.Tensor], masks_pred: list[torch.Tensor],
               grid: tuple[int, int], out_png: str | Path, max_images: int = 8,
               dpi: int = 120) -> Path:
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
        ctx = np.unique(np.concatenate([_as_index_array(_row_indices(mk, b), gh * gw)
                                        for mk in masks_enc]))
        tgts = [_as_index_array(_row_indices(mk, b), gh * gw) for mk in masks_pred]
        ax_msk.imshow(mask_overlay(imgs[b], ctx, tgts, (gh, gw)), interpolation="nearest")
        ax_msk.add_collection(LineCollection(_outline_segments(ctx, (gh, gw), (h, w)),
                                             colors=[CONTEXT_EDGE_COLOR], linewidths=1.2,
                                             linestyles="dashed"))
        for k, t in enumerate(tgts):
            ax_msk.add_collection(LineCollection(_outline_segments(t, (gh, gw), (h, w)),
                                                 colors=[TARGET_COLORS[k % len(TARGET_COLORS)]],
                                                 linewidths=1.6))
        ax_msk.set_xlim(-0.5, w - 0.5)
        ax_msk.set_ylim(h - 0.5, -0.5)
        ax_msk.set_title(f"context {len(ctx)} / targets " + ",".join(str(len(t)) for t in tgts),
                         fontsize=8)
        _hide_ticks(ax_img)
        _hide_ticks(ax_msk)

    handles = [Patch(facecolor="white", edgecolor="black", ls="--", label="context (encoder input)"),
               Patch(facecolor="0.3", edgecolor="black", label="neither (dimmed)")]
    handles += [Patch(facecolor=TARGET_COLORS[k % len(TARGET_COLORS)], alpha=0.7,
                      label=f"target {k + 1}") for k in range(len(masks_pred))]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    fig.suptitle(f"I-JEPA multi-block masks ({gh}x{gw} patch grid)", fontsize=12)
    fig.subplots_adjust(left=0.02, right=0.98, top=1 - 0.55 / fig.get_figheight(),
                        bottom=0.5 / fig.get_figheight(), wspace=0.05, hspace=0.3)
    return _save(fig, out_png, dpi)


# ----------------------------------------------------------------------------------------------
# 3. PCA feature maps
# ----------------------------------------------------------------------------------------------

def pca_rgb(patch_features: torch.Tensor, grid: tuple[int, int], percentile: float = 1.0,
            min_var_ratio: float = 1e-2) -> np.ndarray:
    """Top-3 PCA of all patch tokens of the batch as RGB: (B, N, D) -> (B, H, W, 3) in [0, 1]."""
    gh, gw = _check_grid(grid)
    if patch_features.ndim != 3:
        raise ValueError(f"expected patch features of shape (B, N, D), got {tuple(patch_features.shape)}")
    b, n, d = patch_features.shape
    if n != gh * gw:
        raise ValueError(f"{n} tokens do not match a {gh}x{gw} grid ({gh * gw}); drop any CLS or "
                         f"register tokens first")
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


def plot_pca_maps(images: torch.Tensor, patch_features: torch.Tensor, grid: tuple[int, int],
                  out_png: str | Path, max_images: int = 8, dpi: int = 120, center_positions: bool = False) -> Path:
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
    fig.suptitle(f"patch features, top-3 principal components as RGB ({gh}x{gw} grid, "
                 f"fit on {patch_features.shape[0]} images{centred})", fontsize=11)
    fig.subplots_adjust(left=0.02, right=0.98, top=1 - 0.5 / fig.get_figheight(),
                        bottom=0.05, wspace=0.05, hspace=0.3)
    return _save(fig, out_png, dpi)


# ----------------------------------------------------------------------------------------------
# 4. retrieval grid
# ----------------------------------------------------------------------------------------------

def plot_retrieval_grid(query_images: Sequence[ImageLike], neighbour_images: Sequence[Sequence[ImageLike]],
                        scores: Sequence[Sequence[float]], out_png: str | Path,
                        query_labels: Sequence[Any] | None = None,
                        neighbour_labels: Sequence[Sequence[Any]] | None = None,
                        dpi: int = 120) -> Path:
    """One row per query (bordered, left) followed by its neighbours titled with cosine scores."""
    nq = len(query_images)
    if nq == 0:
        raise ValueError("no query images")
    if len(neighbour_images) != nq or len(scores) != nq:
        raise ValueError(f"{nq} queries but {len(neighbour_images)} neighbour lists and "
                         f"{len(scores)} score lists")
    for i, (nb, sc) in enumerate(zip(neighbour_images, scores)):
        if len(nb) != len(sc):
            raise ValueError(f"query {i}: {len(nb)} neighbours but {len(sc)} scores")
    with_labels = query_labels is not None and neighbour_labels is not None
    k = max((len(nb) for nb in neighbour_images), default=0)
    ncols = 1 + k

    fig = _new_figure((1.75 * ncols + 0.3, 1.95 * nq + 0.5))
    gs = fig.add_gridspec(nq, ncols, wspace=0.08, hspace=0.35)
    for i in range(nq):
        ax_q = fig.add_subplot(gs[i, 0])
        ax_q.imshow(_to_float_image(query_images[i]), interpolation="bilinear")
        _hide_ticks(ax_q)
        # A thick frame (spines, so it never hides pixels) sets the query apart from the results.
        for spine in ax_q.spines.values():
            spine.set_edgecolor("tab:blue")
            spine.set_linewidth(4)
        title = "query" + (f" [{query_labels[i]}]" if with_labels else "")
        ax_q.set_title(title, fontsize=9, color="tab:blue", fontweight="bold")
        for j, (img, score) in enumerate(zip(neighbour_images[i], scores[i])):
            ax = fig.add_subplot(gs[i, 1 + j])
            ax.imshow(_to_float_image(img), interpolation="bilinear")
            _hide_ticks(ax)
            color = "black"
            if with_labels:
                # Green/red by label agreement turns the grid into a visual kNN sanity check.
                color = "tab:green" if neighbour_labels[i][j] == query_labels[i] else "tab:red"
            ax.set_title(f"#{j + 1}  cos {float(score):.3f}", fontsize=8, color=color)
    fig.suptitle("nearest neighbours (cosine similarity)", fontsize=11)
    fig.subplots_adjust(left=0.02, right=0.98, top=1 - 0.45 / fig.get_figheight(),
                        bottom=0.1 / fig.get_figheight())
    return _save(fig, out_png, dpi)


# ----------------------------------------------------------------------------------------------
# 5. kNN accuracy against training time
# ----------------------------------------------------------------------------------------------

def plot_knn_curves(curves: dict[str, Sequence[dict]], out_png: str | Path, x: str = "minutes",
                    floors: dict[str, float] | None = None, dpi: int = 120) -> Path:
    """One line per run of kNN top-1 against `x` ("minutes" or "epoch"); `floors` draws labelled dashed levels.

    Each curve is a list of {"minutes", "epoch", "knn_top1"} points, as `bench/quality.py --knn-every` records.
    """
    if not curves:
        raise ValueError("no curves to plot")
    fig = _new_figure((6.4, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    for i, (label, points) in enumerate(curves.items()):
        if not points:
            raise ValueError(f"curve {label!r} has no points")
        xs = [float(p[x]) for p in points]
        ys = [float(p["knn_top1"]) for p in points]
        ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.5, label=label,
                color=TARGET_COLORS[i % len(TARGET_COLORS)])
    for j, (label, level) in enumerate((floors or {}).items()):
        ax.axhline(level, linestyle="--", linewidth=1, color="0.5" if j == 0 else "0.7", label=label)
    _style(ax, "kNN top-1 of the target encoder during pretraining", "kNN top-1 (held-out)",
           "training minutes (wall clock, this machine)" if x == "minutes" else x)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out_png, dpi)
