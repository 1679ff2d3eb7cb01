"""The data each section of the report page shows: plain values and inlined figures, no HTML.

The template (templates/report.html.j2) renders a `Section` by its `kind`, reading the fields of
its `content`; everything in it is escaped there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .figures import Figure

KNN_TEMPERATURE = 0.07  # knn_classify's default: DINO's protocol


@dataclass(frozen=True)
class Section:
    """One part of the page: `kind` picks its template block, `content` is what that block shows."""

    anchor: str
    heading: str
    kind: str
    content: Any = None
    error: str | None = None  # why the section could not be drawn; content is None then


@dataclass(frozen=True)
class CurvesContent:
    """Training curves from metrics.csv, or where one was looked for."""

    folder: Path | None
    metrics_csv: Path | None
    figure: Figure | None


@dataclass(frozen=True)
class MasksContent:
    """Example multi-block masks and which settings drew them."""

    origin: str
    figure: Figure


@dataclass(frozen=True)
class RetrievalContent:
    """Retrieval grids and the fraction of neighbours sharing the query's label."""

    k: int
    agreement: float
    figure: Figure


@dataclass(frozen=True)
class ClassRow:
    """One row of the per-class kNN table."""

    name: str
    support: int
    accuracy: float  # NaN without test images

    @property
    def bar_px(self) -> int:
        """Width of the accuracy bar (120 px is 100%)."""
        return 0 if math.isnan(self.accuracy) else round(120 * self.accuracy)


@dataclass(frozen=True)
class KnnContent:
    """Per-class kNN accuracy table and confusion matrix."""

    k: int
    top1: float
    n_test: int
    unseen: int  # test images whose class is absent from train
    rows: list[ClassRow]
    figure: Figure
    temperature: float = KNN_TEMPERATURE


@dataclass(frozen=True)
class CollapseContent:
    """Collapse indicators (label, value) and a warning when they point to collapse."""

    rows: list[tuple[str, Any]]
    warning: str | None
