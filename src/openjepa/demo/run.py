"""The offline demo: pretrain a small ViT with I-JEPA on generated images, then show what it learned.

Everything is generated in memory (no download): by default 1-4 shapes on textured backgrounds,
labelled by count (`shapes:N`); `objects:N` labels objects by kind instead. The same architecture
at its random initialisation is probed beside the learned encoder, and the figures show the difference.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from ..config import Config, recipe_path
from ..core.checkpoint import load_checkpoint
from ..core.distributed import DistEnv, resolve_device
from ..data.spec import parse_data_spec
from ..evaluate.results import EvalResult
from ..evaluate.runner import default_pooling, evaluate_encoder, markdown_summary
from ..models.build import build_model
from ..train.budget import budgeted_config
from ..train.loop import fit
from ..viz.run_plots import write_run_plots
from .figures import WHERE_TO_LOOK, prediction_figure, retrieval_figure

logger = logging.getLogger("openjepa.demo")
PRETRAIN_SHARE = 0.75  # of the wall-clock budget; the rest goes to feature extraction, probes and figures
PROBE_TRAIN_IMAGES = 4000  # labelled images the probes fit on when pretraining draws more (unlabelled) ones


def probe_data_for(data: str) -> str:
    """The labelled set the demo probes: a generated set capped at PROBE_TRAIN_IMAGES train images, else `data`.

    Pretraining on more generated images costs only their generation; probing on all of them would cost
    minutes. The capped set is drawn apart from the pretraining images (another count, another stream),
    and its test split is never trained on.
    """
    spec = parse_data_spec(data)
    if spec.kind in ("objects", "shapes") and spec.count is not None and spec.count > PROBE_TRAIN_IMAGES:
        return f"{spec.kind}:{PROBE_TRAIN_IMAGES}"
    return data


def run_demo(
    minutes: float = 9.0,
    out: str | Path = "runs/demo",
    overrides: Sequence[str] = (),
    progress: bool = True,
    figures: bool = True,
    probe_data: str | None = None,
) -> dict[str, Any]:
    """Pretrain within `minutes`, probe learned vs random encoders, write results.json, a table and figures.

    `probe_data`: the labelled data the probes and figures read (default `probe_data_for` the pretraining data).
    """
    t0 = time.perf_counter()
    # Size the schedule to the budget, so warmup and cosine decay both happen within it.
    cfg, step_s = budgeted_config(recipe_path("demo"), [f"logging.folder={out}", *overrides], minutes * PRETRAIN_SHARE)
    device = resolve_device(cfg.meta.device)
    logger.info(
        "demo: %.2f s/step measured; about %d steps fit in %.1f minutes",
        step_s,
        round(60 * minutes * PRETRAIN_SHARE / step_s),
        minutes * PRETRAIN_SHARE,
    )
    result = fit(cfg, progress=progress, env=DistEnv(device=device))
    # The baseline is the very initialisation I-JEPA started from: same architecture, same seed.
    random_enc = build_model(cfg).target_encoder
    learned = build_model(cfg).target_encoder
    assert result.checkpoint is not None  # fit checkpoints at the end of every run
    learned.load_state_dict(load_checkpoint(result.checkpoint)["target_encoder"])
    encoders: dict[str, nn.Module] = {"I-JEPA (target encoder)": learned, "random init": random_enc}
    assert cfg.data.dataset is not None  # the demo recipe names its dataset
    probe = probe_data or probe_data_for(str(cfg.data.dataset))
    rows = _probe(encoders, probe, str(result.checkpoint), device)
    table = _table(rows)
    summary = {
        "minutes_budget": minutes,
        "pretrain_steps": result.steps,
        "epochs": result.epochs_completed,
        "last_loss": result.last_loss,
        "pooling": default_pooling("linear", learned),
        "pretrain_data": str(cfg.data.dataset),
        "probe_data": probe,
        "folder": str(result.folder),
        "results": [r.to_dict() for r in rows],
        "table": table,
        "figures": _figures(cfg, probe, result.folder, result.checkpoint, encoders, device) if figures else {},
    }
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    Path(result.folder, "results.json").write_text(json.dumps(summary, indent=1, default=str))
    Path(result.folder, "results.md").write_text(table + "\n\n" + markdown_summary(rows) + "\n")
    return summary


def _probe(encoders: dict[str, nn.Module], data: str, checkpoint: str, device: Any) -> list[EvalResult]:
    """Linear probe and kNN of each encoder, fitted on `data`'s train split, scored on its held-out split."""
    rows = []
    for name, enc in encoders.items():
        for task in ("linear", "knn"):
            r = evaluate_encoder(enc, data, task, device=device, progress=False)  # the evaluation default
            rows.append(replace(r, checkpoint=checkpoint if name.startswith("I-JEPA") else "random", encoder=name))
    return rows


def _figures(
    cfg: Config, data: str, folder: Path, checkpoint: Path, encoders: dict[str, nn.Module], device: Any
) -> dict[str, dict[str, Any]]:
    """Every figure of the demo, on the probe `data`: {file name: {path, what it shows[, neighbour agreement]}}."""
    size = cfg.data.crop_size
    made: dict[str, dict[str, Any]] = {}
    for name, enc in zip(("retrieval_learned.png", "retrieval_random.png"), encoders.values()):
        pooling = default_pooling("knn", enc)  # what the kNN row read
        path, agree = retrieval_figure(enc, data, size, pooling, folder / name, device=device)
        made[name] = {"path": str(path), "neighbours_with_the_query_label": round(agree, 3)}
    predicted = prediction_figure(checkpoint, data, folder / "predictions.png", device=device)
    if predicted is not None:
        made["predictions.png"] = {"path": str(predicted)}
    if cfg.logging.plots:
        for path in write_run_plots(folder, cfg):
            made[path.name] = {"path": str(path)}
    for name, entry in made.items():
        entry["shows"] = WHERE_TO_LOOK.get(name, "")
    return made


def _table(rows: list[EvalResult]) -> str:
    by = {(r.encoder, r.task): r.top1 for r in rows}
    encoders = list(dict.fromkeys(r.encoder for r in rows))
    lines = ["| encoder | linear probe top-1 | kNN top-1 (k=20) |", "|---|---|---|"]
    for e in encoders:
        lines.append(f"| {e} | {by[(e, 'linear')]:.3f} | {by[(e, 'knn')]:.3f} |")
    return "\n".join(lines)
