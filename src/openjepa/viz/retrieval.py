"""Retrieval grids: each query image followed by its nearest neighbours and their cosine scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ._figure import ImageLike, _hide_ticks, _new_figure, _save, _to_float_image


def plot_retrieval_grid(
    query_images: Sequence[ImageLike],
    neighbour_images: Sequence[Sequence[ImageLike]],
    scores: Sequence[Sequence[float]],
    out_png: str | Path,
    query_labels: Sequence[Any] | None = None,
    neighbour_labels: Sequence[Sequence[Any]] | None = None,
    dpi: int = 120,
) -> Path:
    """One row per query (bordered, left) followed by its neighbours titled with cosine scores."""
    nq = len(query_images)
    if nq == 0:
        raise ValueError("no query images")
    if len(neighbour_images) != nq or len(scores) != nq:
        raise ValueError(f"{nq} queries but {len(neighbour_images)} neighbour lists and {len(scores)} score lists")
    for i, (nb, sc) in enumerate(zip(neighbour_images, scores)):
        if len(nb) != len(sc):
            raise ValueError(f"query {i}: {len(nb)} neighbours but {len(sc)} scores")
    # Both label lists, or None: without either the grid is not coloured by agreement.
    labels = None if query_labels is None or neighbour_labels is None else (query_labels, neighbour_labels)
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
        title = "query" + (f" [{labels[0][i]}]" if labels is not None else "")
        ax_q.set_title(title, fontsize=9, color="tab:blue", fontweight="bold")
        for j, (img, score) in enumerate(zip(neighbour_images[i], scores[i])):
            ax = fig.add_subplot(gs[i, 1 + j])
            ax.imshow(_to_float_image(img), interpolation="bilinear")
            _hide_ticks(ax)
            color = "black"
            if labels is not None:
                # Green/red by label agreement turns the grid into a visual kNN sanity check.
                color = "tab:green" if labels[1][i][j] == labels[0][i] else "tab:red"
            ax.set_title(f"#{j + 1}  cos {float(score):.3f}", fontsize=8, color=color)
    fig.suptitle("nearest neighbours (cosine similarity)", fontsize=11)
    fig.subplots_adjust(left=0.02, right=0.98, top=1 - 0.45 / fig.get_figheight(), bottom=0.1 / fig.get_figheight())
    return _save(fig, out_png, dpi)
