"""One self-contained HTML page showing what a checkpoint learned.

    from openjepa.report import write_report
    write_report("runs/demo/ckpt-step00000500.pt", "shapes:2000", "report.html")

Sections: a summary, training curves (from the checkpoint's run folder, when it holds a
metrics.csv), example multi-block masks, PCA-to-RGB maps of patch features, retrieval grids (test
queries against the train split), per-class weighted-kNN accuracy with a confusion matrix, and the
collapse indicators (normalised target std, RankMe). Every figure is a PNG inlined as base64, the
style sheet is inline and a Content-Security-Policy forbids anything else: the file opens offline,
from anywhere, with no server, and never touches the network.

What the page shows is computed in `report.data`; `templates/report.html.j2` renders it, with
autoescaping on.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, NoReturn, Sequence

import jinja2
import torch
from markupsafe import Markup

from ..core.atomic import atomic_write_text
from .content import Section
from .data import ReportOptions, build_context, build_sections, run_folder_of
from .figures import FigureInliner

# Only inline styles and data: images; no scripts, fonts, frames or connections of any kind.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
TEMPLATE = "report.html.j2"


@dataclass
class ReportResult:
    """What `write_report` wrote and measured."""

    path: Path
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # section -> why it could not be drawn
    images: int = 0  # inlined figures


def _fmt(v: Any, digits: int = 4) -> str:
    """A table value: floats to `digits` significant digits ("n/a" when not finite), the rest as str."""
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.{digits}g}"
    return str(v)


def _pct(v: float) -> str:
    return f"{v:.0%}"


def _fail(message: str) -> NoReturn:
    raise ValueError(message)


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    # autoescape=True rather than select_autoescape: the template's name ends in .j2, which the
    # extension-based default would not escape.
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("openjepa.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(num=_fmt, pct=_pct)
    env.globals["fail"] = _fail
    return env


def render_html(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The page: a header, a navigation bar and one <section> per entry, every value escaped."""
    # The policy is a constant of this module, marked safe so its quotes stay literal in the file.
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(title=title, subtitle=subtitle, sections=list(sections), csp=Markup(CSP))
    )


def _heading(checkpoint: Any, meta: dict[str, Any], data: str, seconds: float) -> tuple[str, str]:
    """(title, subtitle) of the page."""
    from .. import __version__

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = f"I-JEPA encoder report: {Path(str(checkpoint)).name if checkpoint is not None else 'encoder'}"
    subtitle = (
        f"openjepa {__version__} · {stamp} · fingerprint {meta.get('fingerprint', '?')} · "
        f"data {data} · built in {seconds:.0f} s"
    )
    return title, subtitle


@torch.no_grad()
def write_report(
    checkpoint: Any,
    data: str,
    out: str | Path,
    *,
    encoder: Any = None,
    which: str = "target",
    device: str | torch.device = "cpu",
    label_key: str | None = None,
    max_train: int | None = 5000,
    max_test: int | None = 1000,
    n_images: int = 8,
    n_queries: int = 5,
    k: int = 8,
    knn_k: int = 20,
    batch_size: int = 256,
    run_folder: str | Path | None = None,
    strict: bool = False,
    progress: bool = False,
    **load_kw: Any,
) -> ReportResult:
    """Write the HTML report of `checkpoint` (anything `load_encoder` reads) evaluated on `data`.

    data: a dataset spec of `openjepa eval` (folder with train/ and val/, .npz, shapes:N); the
    train split is the kNN memory bank and retrieval database, the test split gives the queries.
    encoder: an already loaded encoder (else loaded from `checkpoint` with `which`/`load_kw`).
    run_folder: where metrics.csv / params-ijepa.yaml are (default: the checkpoint's folder).
    strict: raise on the first section that fails; by default the section shows the error instead.
    """
    t0 = time.perf_counter()
    dev = torch.device(device)
    if encoder is None:
        from ..interop.source import resolve_encoder

        encoder = resolve_encoder(checkpoint, which=which, device=dev, **load_kw)
    encoder = encoder.to(dev).eval()
    folder = Path(run_folder) if run_folder is not None else run_folder_of(checkpoint)
    opts = ReportOptions(
        label_key=label_key,
        max_train=max_train,
        max_test=max_test,
        n_images=n_images,
        n_queries=n_queries,
        k=k,
        knn_k=knn_k,
        batch_size=batch_size,
        progress=progress,
    )
    with tempfile.TemporaryDirectory(prefix="openjepa-report-") as tmp:
        figures = FigureInliner(Path(tmp))
        ctx = build_context(checkpoint, data, encoder, folder, opts, figures, dev)
        sections, errors = build_sections(ctx, strict=strict)
    page = render_html(*_heading(checkpoint, ctx.inputs.meta, data, time.perf_counter() - t0), sections)
    atomic_write_text(out, page)
    return ReportResult(Path(out), time.perf_counter() - t0, ctx.metrics, errors, figures.count)
