"""Training curves from a run's metrics CSV, and kNN accuracy against training time across runs."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._figure import TARGET_COLORS, _new_figure, _save

REQUIRED_COLUMNS = ("step", "epoch", "loss", "lr", "wd", "momentum", "imgs_per_s")
OPTIONAL_COLUMNS = ("target_std", "rankme", "knn_top1")


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
            raise ValueError(
                f"metrics CSV {path} is missing required column(s): {', '.join(missing)} (has: {', '.join(header)})"
            )
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
                    raise ValueError(
                        f"metrics CSV {path}, line {line_no}: column {name!r} has non-numeric value {cell!r}"
                    ) from None
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


def _plot_series(ax: Any, x: np.ndarray, y: np.ndarray, label: str, color: str, sparse_markers: bool = True) -> bool:
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


# Small panels under the loss, as (column, title, y label, colour): the schedules and throughput always,
# then the monitors that were measured.
_ALWAYS_PANELS = (
    ("lr", "learning rate", "lr", "tab:blue"),
    ("wd", "weight decay", "wd", "tab:orange"),
    ("momentum", "EMA momentum (target encoder)", "momentum", "tab:green"),
    ("imgs_per_s", "throughput", "images / s", "tab:gray"),
)
_MEASURED_PANELS = (
    ("target_std", "target feature std (collapse if -> 0)", "std", "tab:red"),
    ("rankme", "RankMe effective rank (collapse if low)", "rank", "tab:purple"),
    ("knn_top1", "kNN top-1 accuracy", "top-1", "tab:brown"),
)


def _draw_loss(ax: Any, m: dict[str, np.ndarray]) -> None:
    """The loss panel: raw and EMA-smoothed loss vs step, log scale when positive, epoch boundaries."""
    step, loss = m["step"], m["loss"]
    finite = np.isfinite(loss) & np.isfinite(step)
    if finite.any():
        ax.plot(step[finite], loss[finite], color="tab:blue", alpha=0.35, lw=0.9, label="loss")
        # Window ~5% of the logged points: enough to read the trend, short enough to show spikes.
        window = max(1.0, finite.sum() / 20.0)
        ax.plot(
            step[finite],
            ema_smooth(loss[finite], window),
            color="tab:blue",
            lw=2.0,
            label=f"loss (EMA, window {window:.0f})",
        )
        # A log axis cannot show zero or negative values; fall back to linear rather than drop them.
        if (loss[finite] > 0).all():
            ax.set_yscale("log")
        # Epoch boundaries help relate the curve to the schedules, but clutter long runs.
        epoch = m["epoch"]
        ok = np.isfinite(epoch)
        changes = np.flatnonzero(np.diff(epoch[ok]) != 0) + 1
        if 0 < len(changes) <= 40:
            for s in step[ok][changes]:
                ax.axvline(s, color="0.6", lw=0.6, ls=":", zorder=0)
        ax.legend(fontsize=8, loc="upper right")
    else:
        ax.text(0.5, 0.5, "no finite loss values", ha="center", va="center", transform=ax.transAxes)
    _style(ax, "training loss (dotted lines: epoch boundaries)", "loss")
    ax.grid(True, which="minor", alpha=0.15)


def plot_training_curves(metrics_csv: str | Path, out_png: str | Path, dpi: int = 120) -> Path:
    """Loss, schedules, throughput and (if logged) collapse indicators / kNN accuracy vs step."""
    m = read_metrics_csv(metrics_csv)
    panels = list(_ALWAYS_PANELS) + [p for p in _MEASURED_PANELS if p[0] in m and bool(np.isfinite(m[p[0]]).any())]
    ncols = 3
    nrows_small = math.ceil(len(panels) / ncols)
    fig = _new_figure((13.0, 3.6 + 2.7 * nrows_small))
    gs = fig.add_gridspec(
        1 + nrows_small,
        ncols,
        height_ratios=[1.35] + [1.0] * nrows_small,
        hspace=0.6,
        wspace=0.28,
        left=0.07,
        right=0.98,
        top=1 - 0.75 / fig.get_figheight(),
        bottom=0.55 / fig.get_figheight(),
    )
    ax_loss = fig.add_subplot(gs[0, :])
    _draw_loss(ax_loss, m)
    for k, (name, title, ylabel, color) in enumerate(panels):
        ax = fig.add_subplot(gs[1 + k // ncols, k % ncols], sharex=ax_loss)
        if not _plot_series(ax, m["step"], m[name], name, color):
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        # Momentum lives in [0.996, 1]: an offset formatter would print unreadable "+9.96e-1" ticks.
        ax.ticklabel_format(axis="y", useOffset=False)
        if name in ("lr", "wd"):
            # Schedules span decades of small values; scientific ticks keep the labels short.
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        _style(ax, title, ylabel)
    fig.suptitle(f"training curves: {Path(metrics_csv).name}", fontsize=12)
    return _save(fig, out_png, dpi)


def plot_knn_curves(
    curves: dict[str, Sequence[dict]],
    out_png: str | Path,
    x: str = "minutes",
    floors: dict[str, float] | None = None,
    dpi: int = 120,
) -> Path:
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
        ax.plot(
            xs, ys, marker="o", markersize=3, linewidth=1.5, label=label, color=TARGET_COLORS[i % len(TARGET_COLORS)]
        )
    for j, (label, level) in enumerate((floors or {}).items()):
        ax.axhline(level, linestyle="--", linewidth=1, color="0.5" if j == 0 else "0.7", label=label)
    _style(
        ax,
        "kNN top-1 of the target encoder during pretraining",
        "kNN top-1 (held-out)",
        "training minutes (wall clock, this machine)" if x == "minutes" else x,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out_png, dpi)
