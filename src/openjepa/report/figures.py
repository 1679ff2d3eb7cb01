"""The report's figures: PNGs drawn into a scratch folder and inlined as base64 data: URIs."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Figure:
    """One inlined figure: a data: URI and its alt text."""

    uri: str
    alt: str


def png_data_uri(png: bytes | str | Path) -> str:
    """A PNG (bytes or file) as a data: URI."""
    data = Path(png).read_bytes() if isinstance(png, (str, Path)) else bytes(png)
    if not data.startswith(PNG_MAGIC):
        raise ValueError("not a PNG")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


class FigureInliner:
    """Draws figures into a scratch folder and returns them inlined; counts what it drew."""

    def __init__(self, folder: Path) -> None:
        """Figures go to `folder` (a temporary directory the caller owns) as fig01.png, fig02.png, ..."""
        self.folder, self.count = Path(folder), 0

    def __call__(self, draw: Callable[[Path], Path], alt: str) -> Figure:
        """Run `draw(png_path)` (it returns the path it wrote) and inline the PNG."""
        self.count += 1
        return Figure(png_data_uri(draw(self.folder / f"fig{self.count:02d}.png")), alt)


def plot_confusion(cm: np.ndarray, names: Sequence[str], out_png: Path) -> Path:
    """Row-normalised confusion matrix heat map (counts written in the cells when there is room)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    c = len(names)
    side = min(11.0, max(3.8, 0.45 * c + 2.2))
    fig = MplFigure(figsize=(side + 1.0, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros_like(cm, dtype=np.float64), where=rows > 0)
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if c <= 40:
        ax.set_xticks(range(c))
        ax.set_yticks(range(c))
        fs = 9 if c <= 12 else 6
        ax.set_xticklabels(
            [str(n)[:14] for n in names], rotation=60 if c > 6 else 0, ha="right" if c > 6 else "center", fontsize=fs
        )
        ax.set_yticklabels([str(n)[:14] for n in names], fontsize=fs)
    if c <= 20:
        for i in range(c):
            for j in range(c):
                if cm[i, j]:
                    ax.text(
                        j,
                        i,
                        str(int(cm[i, j])),
                        ha="center",
                        va="center",
                        fontsize=8 if c <= 12 else 6,
                        color="white" if frac[i, j] > 0.55 else "black",
                    )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("kNN confusion matrix (test split)", fontsize=11)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100, format="png", facecolor="white")
    return out_png
