"""What the report shows, computed from the encoder, its run folder and the dataset; no HTML here.

`build_sections` returns one `Section` per part of the page, each holding the plain data its part
of the template renders (numbers, names, inlined figures). A section that fails to compute holds
the error instead, so one broken figure does not lose the whole report.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from .content import (
    KNN_TEMPERATURE,
    ClassRow,
    CollapseContent,
    CurvesContent,
    KnnContent,
    MasksContent,
    RetrievalContent,
    Section,
)
from .figures import Figure, FigureInliner, plot_confusion

if TYPE_CHECKING:
    from ..models.vision_transformer import VisionTransformer

logger = logging.getLogger("openjepa.report")


@dataclass(frozen=True)
class ReportOptions:
    """How much of the dataset to use and how many images / queries / neighbours to show."""

    label_key: str | None = None
    max_train: int | None = 5000
    max_test: int | None = 1000
    n_images: int = 8
    n_queries: int = 5
    k: int = 8  # neighbours per retrieval query
    knn_k: int = 20
    batch_size: int = 256
    progress: bool = False


@dataclass
class ReportInputs:
    """What the sections draw from: features of both splits, the labels and a few test images."""

    checkpoint: Any
    data: str
    meta: dict[str, Any]
    folder: Path | None  # the run folder (metrics.csv, params-ijepa.yaml), if any
    img_size: int
    patch: int
    grid: tuple[int, int]
    train_ds: Any
    test_ds: Any
    train_f: torch.Tensor  # (N_train, D) mean-pooled features
    test_f: torch.Tensor  # (N_test, D)
    train_idx: torch.Tensor  # (N_train,) class indices 0..C-1
    test_idx: torch.Tensor  # (N_test,) class indices, -1 for a class absent from train
    names: list[str]  # class index -> display name
    sample: torch.Tensor  # (S, 3, H, W) leading test images (normalised)
    tokens: torch.Tensor  # (S, T, D) their last-layer patch features
    n_show: int  # images in the mask and PCA figures


@dataclass(frozen=True)
class KnnStats:
    """Weighted-kNN predictions on the test split, their accuracy overall and per class."""

    k: int  # the k used (clipped to the train size)
    top1: float
    per_class: torch.Tensor  # (C,) accuracy, NaN for classes without test images
    cm: np.ndarray  # (C, C) confusion counts, rows = true class


@dataclass
class ReportContext:
    """Everything a section builder may read; `metrics` collects the numbers the CLI prints."""

    inputs: ReportInputs
    knn: KnnStats
    stats: dict[str, float]  # collapse indicators of this encoder
    logged: dict[str, float]  # last values logged during training (metrics.csv)
    metrics_csv: Path | None
    figures: FigureInliner
    opts: ReportOptions
    metrics: dict[str, Any] = field(default_factory=dict)


def run_folder_of(checkpoint: Any) -> Path | None:
    """The run folder of a checkpoint: the folder itself, or the folder holding the file; None for random:."""
    from ..interop.source import parse_encoder_source

    if not isinstance(checkpoint, (str, os.PathLike)) or not os.fspath(checkpoint).strip():
        return None
    return parse_encoder_source(checkpoint).run_folder


def _class_names(train_ds: Any, classes: torch.Tensor) -> list[str]:
    while hasattr(train_ds, "dataset") and not hasattr(train_ds, "classes"):  # unwrap Subset
        train_ds = train_ds.dataset
    names = getattr(train_ds, "classes", None)
    return [
        str(names[c]) if names is not None and isinstance(c, int) and 0 <= c < len(names) else str(c)
        for c in classes.tolist()
    ]


def last_logged(metrics_csv: Path) -> dict[str, float]:
    """The last finite value of each collapse / kNN / loss column of a metrics.csv, and the step count."""
    from ..viz import read_metrics_csv

    m = read_metrics_csv(metrics_csv)
    out: dict[str, float] = {}
    for name in ("target_std", "rankme", "knn_top1", "loss"):
        if name in m:
            v = m[name][np.isfinite(m[name])]
            if v.size:
                out[name] = float(v[-1])
    out["steps"] = float(np.nanmax(m["step"]))
    return out


def load_inputs(
    checkpoint: Any,
    data: str,
    encoder: VisionTransformer,
    folder: Path | None,
    opts: ReportOptions,
    device: torch.device,
) -> ReportInputs:
    """Both splits of `data` at the encoder's resolution, their features, and a sample of test images."""
    from ..evaluate import extract_features
    from ..evaluate._common import encode_labels
    from ..evaluate.runner import eval_datasets

    img_size, bs = int(encoder.img_size[0]), opts.batch_size
    train_ds, test_ds = eval_datasets(data, img_size, opts.label_key, opts.max_train, opts.max_test)
    train_f, train_y = extract_features(encoder, train_ds, batch_size=bs, device=device, progress=opts.progress)
    test_f, test_y = extract_features(encoder, test_ds, batch_size=bs, device=device, progress=opts.progress)
    train_idx, test_idx, classes = encode_labels(train_y, test_y)
    assert test_idx is not None  # test_y was given
    n_show = min(opts.n_images, len(test_ds))  # type: ignore[arg-type]  # torch's Dataset declares no __len__
    # A few more images than shown, so the collapse indicators see enough patches.
    sample = torch.stack([test_ds[i][0] for i in range(min(len(test_ds), max(n_show, 64)))])  # type: ignore[arg-type]
    tokens = torch.cat([encoder(sample[i : i + bs].to(device)).float().cpu() for i in range(0, len(sample), bs)])
    return ReportInputs(
        checkpoint=checkpoint,
        data=data,
        meta=dict(getattr(encoder, "meta", None) or {}),
        folder=folder,
        img_size=img_size,
        patch=int(encoder.patch_size),
        grid=(int(encoder.grid_size[0]), int(encoder.grid_size[1])),
        train_ds=train_ds,
        test_ds=test_ds,
        train_f=train_f,
        test_f=test_f,
        train_idx=train_idx,
        test_idx=test_idx,
        names=_class_names(train_ds, classes),
        sample=sample,
        tokens=tokens,
        n_show=n_show,
    )


def knn_stats(inputs: ReportInputs, knn_k: int) -> KnnStats:
    """Weighted cosine kNN of the test split against the train split."""
    from ..evaluate import confusion_matrix, knn_classify, per_class_accuracy

    c = len(inputs.names)
    probs = knn_classify(inputs.train_f, inputs.train_idx, inputs.test_f, k=knn_k, num_classes=c)
    pred = probs.argmax(dim=1)
    acc = float((pred == inputs.test_idx).float().mean()) if len(pred) else math.nan
    return KnnStats(
        k=min(knn_k, len(inputs.train_f)),
        top1=acc,
        per_class=per_class_accuracy(pred, inputs.test_idx, c),
        cm=confusion_matrix(pred, inputs.test_idx, c).numpy(),
    )


def summary_rows(ctx: ReportContext) -> list[tuple[str, Any]]:
    """The summary table: what was evaluated and the headline numbers."""
    inp, meta = ctx.inputs, ctx.inputs.meta
    arch = meta.get("arch") or {}
    embed_dim = arch.get("embed_dim", int(inp.tokens.shape[-1]))
    rows: list[tuple[str, Any]] = [
        ("checkpoint", inp.checkpoint if inp.checkpoint is not None else meta.get("source", "(given encoder)")),
        ("format / encoder", f"{meta.get('format', '?')} / {meta.get('which', '?')}"),
        (
            "architecture",
            (
                f"width {embed_dim}, depth {arch.get('depth', '?')}, heads {arch.get('num_heads', '?')}, "
                f"patch {inp.patch}, image {inp.img_size} px ({inp.grid[0]}x{inp.grid[1]} patches)"
            ),
        ),
        ("weights fingerprint", meta.get("fingerprint", "?")),
        (
            "dataset",
            (
                f"{inp.data}: {len(inp.train_f)} train (kNN bank, retrieval database), {len(inp.test_f)} "
                f"test, {len(inp.names)} classes"
            ),
        ),
        (f"weighted kNN top-1 (k={ctx.knn.k}, cosine, T={KNN_TEMPERATURE})", ctx.knn.top1),
        ("target feature std (normalised; ~1 healthy, 0 collapsed)", ctx.stats["target_std"]),
        (f"RankMe effective rank (of {inp.tokens.shape[-1]})", ctx.stats["rankme"]),
    ]
    if inp.folder is not None:
        rows.append(("run folder", inp.folder))
    if ctx.logged:
        rows.append(("training steps logged", int(ctx.logged["steps"])))
    return rows


def curves_content(ctx: ReportContext) -> CurvesContent:
    """The run's training curves, when its folder holds a metrics.csv."""
    from ..viz import plot_training_curves

    csv = ctx.metrics_csv
    if csv is None or not csv.is_file():
        return CurvesContent(ctx.inputs.folder, None, None)
    return CurvesContent(
        ctx.inputs.folder, csv, ctx.figures(lambda p: plot_training_curves(csv, p, dpi=90), "training curves")
    )


def masks_content(ctx: ReportContext) -> MasksContent:
    """Masks drawn by the run's own collator (or the reference settings) on test images."""
    from ..masks.build import run_mask_collator
    from ..viz import plot_masks

    inp, n = ctx.inputs, ctx.inputs.n_show
    collator, origin = run_mask_collator(inp.folder, inp.img_size, inp.patch)
    collator.set_epoch(0)
    batch, masks_enc, masks_pred = collator([(inp.sample[i], 0) for i in range(n)])
    return MasksContent(
        origin,
        ctx.figures(
            lambda p: plot_masks(batch[0], masks_enc, masks_pred, inp.grid, p, max_images=n, dpi=90), "example masks"
        ),
    )


def pca_figure(ctx: ReportContext) -> Figure:
    """The first three principal components of the patch features as RGB."""
    from ..viz import plot_pca_maps

    inp, n = ctx.inputs, ctx.inputs.n_show
    return ctx.figures(
        lambda p: plot_pca_maps(inp.sample[:n], inp.tokens[:n], inp.grid, p, max_images=n, dpi=90),
        "PCA of patch features",
    )


def _query_order(test_idx: torch.Tensor, n_queries: int) -> list[int]:
    """One test image per class first (then the next ones), so the grid shows several classes."""
    order: list[int] = []
    seen: set[int] = set()
    for i, y in enumerate(test_idx.tolist()):
        if y not in seen:
            order.append(i)
            seen.add(y)
        if len(order) >= n_queries:
            break
    return order + [i for i in range(len(test_idx)) if i not in order][: max(0, n_queries - len(order))]


def retrieval_content(ctx: ReportContext) -> RetrievalContent:
    """Test queries and their nearest train images by cosine similarity of pooled features."""
    from ..search import Index
    from ..viz import denormalize, plot_retrieval_grid

    inp, k = ctx.inputs, ctx.opts.k
    order = _query_order(inp.test_idx, ctx.opts.n_queries)
    res = Index(inp.train_f, [f"train/{i}" for i in range(len(inp.train_f))]).search(inp.test_f[order], k=k)
    hits = res.indices.tolist()
    q_imgs = list(denormalize(torch.stack([inp.test_ds[i][0] for i in order])))
    nb_imgs = [list(denormalize(torch.stack([inp.train_ds[j][0] for j in row if j >= 0]))) for row in hits]
    scores = [[s for s in row if math.isfinite(s)] for row in res.scores.tolist()]
    q_lab = [inp.names[inp.test_idx[i]] if inp.test_idx[i] >= 0 else "?" for i in order]
    n_lab = [[inp.names[inp.train_idx[j]] for j in row if j >= 0] for row in hits]
    agree = float(np.mean([[a == ql for a in row] for ql, row in zip(q_lab, n_lab)])) if n_lab else math.nan
    ctx.metrics["retrieval_label_agreement"] = agree
    figure = ctx.figures(
        lambda p: plot_retrieval_grid(q_imgs, nb_imgs, scores, p, q_lab, n_lab, dpi=90), "retrieval grids"
    )
    return RetrievalContent(k, agree, figure)


def knn_content(ctx: ReportContext) -> KnnContent:
    """Per-class kNN accuracy and the confusion matrix."""
    knn, names = ctx.knn, ctx.inputs.names
    support = knn.cm.sum(axis=1)
    rows = [ClassRow(name, int(support[c]), float(knn.per_class[c])) for c, name in enumerate(names)]
    figure = ctx.figures(lambda p: plot_confusion(knn.cm, names, p), "confusion matrix")
    return KnnContent(knn.k, knn.top1, len(ctx.inputs.test_f), int((ctx.inputs.test_idx < 0).sum()), rows, figure)


def collapse_content(ctx: ReportContext) -> CollapseContent:
    """This encoder's collapse indicators beside the last ones logged during training."""
    from ..train.monitor import collapse_warning

    tokens, stats, logged = ctx.inputs.tokens, ctx.stats, ctx.logged
    rows: list[tuple[str, Any]] = [
        ("normalised target std (this encoder, test images)", stats["target_std"]),
        (
            f"RankMe (this encoder, {int(tokens.shape[0] * tokens.shape[1])} patch tokens; max {tokens.shape[-1]})",
            stats["rankme"],
        ),
    ]
    if "target_std" in logged:
        rows.append(("last target std logged during training", logged["target_std"]))
    if "rankme" in logged:
        rows.append(("last RankMe logged during training", logged["rankme"]))
    return CollapseContent(rows, collapse_warning(stats, int(tokens.shape[-1])))


# (anchor, heading, builder) of every section after the summary, in page order.
SECTIONS: tuple[tuple[str, str, Callable[[ReportContext], Any]], ...] = (
    ("curves", "Training curves", curves_content),
    ("masks", "Example masks", masks_content),
    ("pca", "Patch features (PCA to RGB)", pca_figure),
    ("retrieval", "Retrieval", retrieval_content),
    ("knn", "Per-class kNN accuracy and confusion matrix", knn_content),
    ("collapse", "Collapse indicators", collapse_content),
)


def build_context(
    checkpoint: Any,
    data: str,
    encoder: VisionTransformer,
    folder: Path | None,
    opts: ReportOptions,
    figures: FigureInliner,
    device: torch.device,
) -> ReportContext:
    """Features, kNN, collapse indicators and logged values: what every section shares."""
    from ..train.monitor import collapse_stats

    inputs = load_inputs(checkpoint, data, encoder, folder, opts, device)
    knn = knn_stats(inputs, opts.knn_k)
    stats = collapse_stats(inputs.tokens)
    metrics_csv = folder / "metrics.csv" if folder is not None else None
    logged: dict[str, float] = {}
    if metrics_csv is not None and metrics_csv.is_file():
        try:
            logged = last_logged(metrics_csv)
        except ValueError as e:
            logger.warning("cannot read %s: %s", metrics_csv, e)
    metrics: dict[str, Any] = {
        "fingerprint": inputs.meta.get("fingerprint"),
        "data": data,
        "n_train": len(inputs.train_f),
        "n_test": len(inputs.test_f),
        "num_classes": len(inputs.names),
        "knn_top1": knn.top1,
        "knn_k": knn.k,
        **stats,
    }
    return ReportContext(inputs, knn, stats, logged, metrics_csv, figures, opts, metrics)


def build_sections(ctx: ReportContext, strict: bool = False) -> tuple[list[Section], dict[str, str]]:
    """The summary and every section of `SECTIONS`; returns (sections, {anchor: error} of failed ones)."""
    sections = [Section("summary", "Summary", "summary", summary_rows(ctx))]
    errors: dict[str, str] = {}
    for anchor, heading, build in SECTIONS:
        try:
            sections.append(Section(anchor, heading, anchor, build(ctx)))
        except Exception as e:  # one failing figure should not lose the whole report
            if strict:
                raise
            logger.warning("report section %r failed: %s: %s", heading, type(e).__name__, e)
            errors[anchor] = f"{type(e).__name__}: {e}"
            sections.append(Section(anchor, heading, anchor, error=errors[anchor]))
    return sections, errors
