"""One self-contained HTML page showing what a checkpoint learned.

    from openjepa.report import write_report
    write_report("runs/demo/ckpt-step00000500.pt", "shapes:2000", "report.html")

Sections: a summary, training curves (from the checkpoint's run folder, when it holds a
metrics.csv), example multi-block masks, PCA-to-RGB maps of patch features, retrieval grids (test
queries against the train split), per-class weighted-kNN accuracy with a confusion matrix, and the
collapse indicators (normalised target std, RankMe). Every figure is a PNG inlined as base64, the
style sheet is inline and a Content-Security-Policy forbids anything else: the file opens offline,
from anywhere, with no server, and never touches the network.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

logger = logging.getLogger("openjepa.report")

__all__ = ["write_report", "ReportResult", "render_html", "png_data_uri", "run_folder_of", "CSP"]

# Only inline styles and data: images; no scripts, fonts, frames or connections of any kind.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d2330;
background:#f6f7f9;line-height:1.45}
header{background:#1d2330;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px 0;font-size:22px}
header p{margin:0;color:#c9cfdb;font-size:13px}
nav{padding:8px 28px;background:#e8ebf0;font-size:13px}
nav a{margin-right:14px;color:#24508f;text-decoration:none}
main{padding:8px 28px 40px 28px;max-width:1400px}
section{background:#fff;border:1px solid #dde1e8;border-radius:6px;padding:14px 18px;margin:16px 0}
h2{font-size:17px;margin:0 0 8px 0}
p.note{color:#5a6272;font-size:13px;margin:4px 0 10px 0}
p.error{color:#9b1c1c;background:#fdecec;padding:6px 10px;border-radius:4px;font-size:13px}
img.fig{max-width:100%;height:auto;display:block;margin:6px 0;border:1px solid #eef0f3}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #dde1e8;padding:3px 8px;text-align:left}
th{background:#f0f2f5}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.bar{background:#4a7bd0;height:10px;display:inline-block;vertical-align:middle}
.kv td:first-child{color:#5a6272}
.ok{color:#1b7a2f}.warn{color:#9b1c1c;font-weight:600}
"""


@dataclass
class ReportResult:
    """What `write_report` wrote and measured."""

    path: Path
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # section -> why it could not be drawn
    images: int = 0  # inlined figures


def png_data_uri(png: bytes | str | Path) -> str:
    """A PNG (bytes or file) as a data: URI."""
    data = Path(png).read_bytes() if isinstance(png, (str, Path)) else bytes(png)
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("not a PNG")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def run_folder_of(checkpoint: Any) -> Path | None:
    """The run folder of a checkpoint: the folder itself, or the folder holding the file; None for random:."""
    if not isinstance(checkpoint, (str, os.PathLike)) or str(checkpoint).startswith("random:"):
        return None
    p = Path(checkpoint)
    if p.is_dir():
        return p
    return p.parent if p.exists() else None


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.{digits}g}"
    return str(v)


# ----------------------------------------------------------------------------------------------
# figures drawn here (the rest come from openjepa.viz)
# ----------------------------------------------------------------------------------------------

def _plot_confusion(cm: np.ndarray, names: Sequence[str], out_png: Path) -> Path:
    """Row-normalised confusion matrix heat map (counts written in the cells when there is room)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    c = len(names)
    side = min(11.0, max(3.8, 0.45 * c + 2.2))
    fig = Figure(figsize=(side + 1.0, side))
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
        ax.set_xticklabels([str(n)[:14] for n in names], rotation=60 if c > 6 else 0, ha="right" if c > 6 else "center",
                           fontsize=fs)
        ax.set_yticklabels([str(n)[:14] for n in names], fontsize=fs)
    if c <= 20:
        for i in range(c):
            for j in range(c):
                if cm[i, j]:
                    ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=8 if c <= 12 else 6,
                            color="white" if frac[i, j] > 0.55 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("kNN confusion matrix (test split)", fontsize=11)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100, format="png", facecolor="white")
    return out_png


# ----------------------------------------------------------------------------------------------
# the page
# ----------------------------------------------------------------------------------------------

def render_html(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The page: sections are (anchor id, heading, inner HTML already escaped)."""
    nav = " ".join(f'<a href="#{_esc(a)}">{_esc(h)}</a>' for a, h, _ in sections)
    body = "\n".join(f'<section id="{_esc(a)}"><h2>{_esc(h)}</h2>\n{inner}\n</section>' for a, h, inner in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{_esc(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            f"<header><h1>{_esc(title)}</h1><p>{_esc(subtitle)}</p></header>\n<nav>{nav}</nav>\n"
            f"<main>\n{body}\n</main>\n</body>\n</html>\n")


def _img(uri: str, alt: str) -> str:
    return f'<img class="fig" src="{uri}" alt="{_esc(alt)}">'


def _kv_table(rows: Sequence[tuple[str, Any]]) -> str:
    return ('<table class="kv">' + "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(_fmt(v))}</td></tr>" for k, v in rows)
            + "</table>")


class _Figures:
    """Draws figures into a temporary folder and returns them as data URIs."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.n = folder, 0

    def __call__(self, draw: Callable[[Path], Path]) -> str:
        self.n += 1
        out = draw(self.folder / f"fig{self.n:02d}.png")
        return png_data_uri(out)


def _base_dataset(ds: Any) -> Any:
    while hasattr(ds, "dataset") and not hasattr(ds, "classes"):
        ds = ds.dataset
    return ds


def _class_names(train_ds: Any, classes: torch.Tensor) -> list[str]:
    names = getattr(_base_dataset(train_ds), "classes", None)
    out = []
    for c in classes.tolist():
        if names is not None and isinstance(c, int) and 0 <= c < len(names):
            out.append(str(names[c]))
        else:
            out.append(str(c))
    return out


def _last_logged(metrics_csv: Path) -> dict[str, float]:
    from ..viz import read_metrics_csv

    m = read_metrics_csv(metrics_csv)
    out = {}
    for name in ("target_std", "rankme", "knn_top1", "loss"):
        if name in m:
            v = m[name][np.isfinite(m[name])]
            if v.size:
                out[name] = float(v[-1])
    out["steps"] = float(np.nanmax(m["step"]))
    return out


@torch.no_grad()
def write_report(checkpoint: Any, data: str, out: str | Path, *, encoder: Any = None, which: str = "target",
                 device: str | torch.device = "cpu", label_key: str | None = None, max_train: int | None = 5000,
                 max_test: int | None = 1000, n_images: int = 8, n_queries: int = 5, k: int = 8, knn_k: int = 20,
                 batch_size: int = 256, run_folder: str | Path | None = None, strict: bool = False,
                 progress: bool = False, **load_kw: Any) -> ReportResult:
    """Write the HTML report of `checkpoint` (anything `load_encoder` reads) evaluated on `data`.

    data: a dataset spec of `openjepa eval` (folder with train/ and val/, .npz, shapes:N); the
    train split is the kNN memory bank and retrieval database, the test split gives the queries.
    encoder: an already loaded encoder (else loaded from `checkpoint` with `which`/`load_kw`).
    run_folder: where metrics.csv / params-ijepa.yaml are (default: the checkpoint's folder).
    strict: raise on the first section that fails; by default the section shows the error instead.
    """
    from ..evaluate import confusion_matrix, extract_features, knn_classify, per_class_accuracy
    from ..evaluate._common import encode_labels
    from ..evaluate.runner import eval_datasets
    from ..search import Index
    from ..train.loop import run_mask_collator
    from ..train.monitor import collapse_stats, collapse_warning
    from ..viz import denormalize, plot_masks, plot_pca_maps, plot_retrieval_grid, plot_training_curves

    t0 = time.perf_counter()
    dev = torch.device(device)
    if encoder is None:
        from ..interop import load_encoder

        encoder = load_encoder(checkpoint, which=which, device=dev, **load_kw)
    encoder = encoder.to(dev).eval()
    meta = dict(getattr(encoder, "meta", None) or {})
    folder = Path(run_folder) if run_folder is not None else run_folder_of(checkpoint)
    img_size, patch = int(encoder.img_size[0]), int(encoder.patch_size)
    grid = tuple(int(g) for g in encoder.grid_size)
    sections: list[tuple[str, str, str]] = []
    errors: dict[str, str] = {}
    metrics: dict[str, Any] = {"fingerprint": meta.get("fingerprint"), "data": data}

    def guarded(anchor: str, heading: str, body: Callable[[], str]) -> None:
        try:
            inner = body()
        except Exception as e:  # noqa: BLE001 - one failing figure should not lose the whole report
            if strict:
                raise
            logger.warning("report section %r failed: %s: %s", heading, type(e).__name__, e)
            errors[anchor] = f"{type(e).__name__}: {e}"
            inner = f'<p class="error">could not draw this section: {_esc(errors[anchor])}</p>'
        sections.append((anchor, heading, inner))

    with tempfile.TemporaryDirectory(prefix="openjepa-report-") as tmp:
        fig = _Figures(Path(tmp))

        # ---- data and features (shared by several sections)
        train_ds, test_ds = eval_datasets(data, img_size, label_key, max_train, max_test)
        train_f, train_y = extract_features(encoder, train_ds, batch_size=batch_size, device=dev, progress=progress)
        test_f, test_y = extract_features(encoder, test_ds, batch_size=batch_size, device=dev, progress=progress)
        train_idx, test_idx, classes = encode_labels(train_y, test_y)
        names = _class_names(train_ds, classes)
        n_show = min(n_images, len(test_ds))
        sample = torch.stack([test_ds[i][0] for i in range(min(len(test_ds), max(n_show, 64)))])
        tokens = torch.cat([encoder(sample[i:i + batch_size].to(dev)).float().cpu()
                            for i in range(0, len(sample), batch_size)])
        metrics.update(n_train=len(train_f), n_test=len(test_f), num_classes=len(classes))

        # ---- kNN (computed first: the summary shows its accuracy)
        probs = knn_classify(train_f, train_idx, test_f, k=knn_k, num_classes=len(classes))
        pred = probs.argmax(dim=1)
        acc = float((pred == test_idx).float().mean()) if len(pred) else math.nan
        per_class = per_class_accuracy(pred, test_idx, len(classes))
        cm = confusion_matrix(pred, test_idx, len(classes)).numpy()
        metrics.update(knn_top1=acc, knn_k=min(knn_k, len(train_f)))
        stats = collapse_stats(tokens)
        metrics.update(stats)
        logged = {}
        metrics_csv = folder / "metrics.csv" if folder is not None else None
        if metrics_csv is not None and metrics_csv.is_file():
            try:
                logged = _last_logged(metrics_csv)
            except ValueError as e:
                logger.warning("cannot read %s: %s", metrics_csv, e)

        # ---- summary
        arch = meta.get("arch") or {}
        summary_rows = [
            ("checkpoint", checkpoint if checkpoint is not None else meta.get("source", "(given encoder)")),
            ("format / encoder", f"{meta.get('format', '?')} / {meta.get('which', '?')}"),
            ("architecture", f"width {arch.get('embed_dim', encoder.embed_dim)}, depth {arch.get('depth', '?')}, "
                             f"heads {arch.get('num_heads', '?')}, patch {patch}, image {img_size} px "
                             f"({grid[0]}x{grid[1]} patches)"),
            ("weights fingerprint", meta.get("fingerprint", "?")),
            ("dataset", f"{data}: {len(train_f)} train (kNN bank, retrieval database), {len(test_f)} test, "
                        f"{len(classes)} classes"),
            (f"weighted kNN top-1 (k={metrics['knn_k']}, cosine, T=0.07)", acc),
            ("target feature std (normalised; ~1 healthy, 0 collapsed)", stats["target_std"]),
            (f"RankMe effective rank (of {tokens.shape[-1]})", stats["rankme"]),
        ]
        if folder is not None:
            summary_rows.append(("run folder", folder))
        if logged:
            summary_rows.append(("training steps logged", int(logged["steps"])))
        sections.append(("summary", "Summary", _kv_table(summary_rows)))

        # ---- training curves
        def curves() -> str:
            if metrics_csv is None or not metrics_csv.is_file():
                where = f"in {folder}" if folder is not None else "(no run folder: a random or in-memory encoder)"
                return f'<p class="note">No metrics.csv {_esc(where)}: no training curves to show.</p>'
            uri = fig(lambda p: plot_training_curves(metrics_csv, p, dpi=90))
            return (f'<p class="note">From {_esc(metrics_csv)}: loss (raw and smoothed), schedules, '
                    f'throughput and, when logged, collapse indicators and kNN accuracy.</p>'
                    + _img(uri, "training curves"))

        guarded("curves", "Training curves", curves)

        # ---- masks
        def masks() -> str:
            collator, origin = run_mask_collator(folder, img_size, patch)
            collator.set_epoch(0)
            batch, masks_enc, masks_pred = collator([(sample[i], 0) for i in range(n_show)])
            uri = fig(lambda p: plot_masks(batch[0], masks_enc, masks_pred, grid, p, max_images=n_show, dpi=90))
            return (f'<p class="note">Multi-block masks drawn by the training collator ({_esc(origin)}) on test '
                    f'images: the context encoder sees the bright part, the predictor must predict the '
                    f'target encoder\'s features of the tinted blocks.</p>' + _img(uri, "example masks"))

        guarded("masks", "Example masks", masks)

        # ---- PCA maps
        def pca() -> str:
            uri = fig(lambda p: plot_pca_maps(sample[:n_show], tokens[:n_show], grid, p, max_images=n_show, dpi=90))
            return ('<p class="note">The first three principal components of the patch features '
                    '(last layer, this encoder) as RGB: patches that look alike to the encoder share a colour.</p>'
                    + _img(uri, "PCA of patch features"))

        guarded("pca", "Patch features (PCA to RGB)", pca)

        # ---- retrieval
        def retrieval() -> str:
            index = Index(train_f, [f"train/{i}" for i in range(len(train_f))])
            # One query per class first (then the next test images), so the grid shows several classes.
            order: list[int] = []
            seen: set[int] = set()
            for i, y in enumerate(test_idx.tolist()):
                if y not in seen:
                    order.append(i)
                    seen.add(y)
                if len(order) >= n_queries:
                    break
            order += [i for i in range(len(test_f)) if i not in order][: max(0, n_queries - len(order))]
            res = index.search(test_f[order], k=k)
            q_imgs = list(denormalize(torch.stack([test_ds[i][0] for i in order])))
            nb_imgs = [list(denormalize(torch.stack([train_ds[j][0] for j in row if j >= 0])))
                       for row in res.indices.tolist()]
            scores = [[s for s in row if math.isfinite(s)] for row in res.scores.tolist()]
            q_lab = [names[test_idx[i]] if test_idx[i] >= 0 else "?" for i in order]
            n_lab = [[names[train_idx[j]] for j in row if j >= 0] for row in res.indices.tolist()]
            agree = np.mean([[a == ql for a in row] for ql, row in zip(q_lab, n_lab)]) if n_lab else math.nan
            metrics["retrieval_label_agreement"] = float(agree)
            uri = fig(lambda p: plot_retrieval_grid(q_imgs, nb_imgs, scores, p, q_lab, n_lab, dpi=90))
            return (f'<p class="note">Test images (left) and their {k} most cosine-similar train images '
                    f'(mean-pooled features); green titles share the query\'s label, red ones do not '
                    f'({agree:.0%} agree).</p>' + _img(uri, "retrieval grids"))

        guarded("retrieval", "Retrieval", retrieval)

        # ---- kNN per class
        def knn() -> str:
            support = cm.sum(axis=1)
            rows = []
            for c, name in enumerate(names):
                a = float(per_class[c])
                bar = f'<span class="bar" style="width:{0 if math.isnan(a) else round(120 * a)}px"></span>'
                rows.append(f"<tr><td>{_esc(name)}</td><td class=\"num\">{int(support[c])}</td>"
                            f"<td class=\"num\">{_esc(_fmt(a, 3))}</td><td>{bar}</td></tr>")
            table = ("<table><tr><th>class</th><th>test images</th><th>kNN accuracy</th><th></th></tr>"
                     + "".join(rows) + "</table>")
            uri = fig(lambda p: _plot_confusion(cm, names, p))
            unseen = int((test_idx < 0).sum())
            extra = f" {unseen} test images have a class absent from train (counted wrong)." if unseen else ""
            return (f'<p class="note">Weighted cosine kNN (k={metrics["knn_k"]}, temperature 0.07, DINO\'s '
                    f'protocol) on frozen mean-pooled features: top-1 {_esc(_fmt(acc, 4))} on '
                    f'{len(test_f)} test images.{_esc(extra)}</p>' + table + _img(uri, "confusion matrix"))

        guarded("knn", "Per-class kNN accuracy and confusion matrix", knn)

        # ---- collapse
        def collapse() -> str:
            warn = collapse_warning(stats, int(tokens.shape[-1]))
            rows = [("normalised target std (this encoder, test images)", stats["target_std"]),
                    (f"RankMe (this encoder, {int(tokens.shape[0] * tokens.shape[1])} patch tokens; max "
                     f"{tokens.shape[-1]})", stats["rankme"])]
            if "target_std" in logged:
                rows.append(("last target std logged during training", logged["target_std"]))
            if "rankme" in logged:
                rows.append(("last RankMe logged during training", logged["rankme"]))
            verdict = (f'<p class="warn">{_esc(warn)}</p>' if warn else
                       '<p class="ok">No sign of collapse: the features vary across images and patches.</p>')
            return ('<p class="note">A collapsed encoder maps everything to (nearly) the same feature: its '
                    'normalised std falls towards 0 and its effective rank (RankMe, Garrido et al. 2023) '
                    'towards 1.</p>' + _kv_table(rows) + verdict)

        guarded("collapse", "Collapse indicators", collapse)

        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        from .. import __version__

        title = f"I-JEPA encoder report: {Path(str(checkpoint)).name if checkpoint is not None else 'encoder'}"
        subtitle = (f"openjepa {__version__} · {stamp} · fingerprint {meta.get('fingerprint', '?')} · "
                    f"data {data} · built in {time.perf_counter() - t0:.0f} s")
        page = render_html(title, subtitle, sections)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(f".{out.name}.tmp")
    tmp_out.write_text(page, encoding="utf-8")
    os.replace(tmp_out, out)
    return ReportResult(out, time.perf_counter() - t0, metrics, errors, fig.n)
