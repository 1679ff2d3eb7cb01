"""The offline demo: pretrain a small ViT with I-JEPA on generated shape images, then show what it learned.

Everything is generated in memory (no download). The labels (how many shapes an image holds) need
spatial understanding, so a linear probe separates an encoder that learned something from a random one.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from .config import recipe_path
from .core.checkpoint import load_checkpoint
from .core.distributed import DistEnv, resolve_device
from .evaluate.results import EvalResult
from .evaluate.runner import evaluate_encoder, markdown_summary
from .models.build import build_model
from .train.budget import budgeted_config
from .train.loop import fit
from .viz.run_plots import write_run_plots

logger = logging.getLogger("openjepa.demo")
PRETRAIN_SHARE = 0.75  # of the wall-clock budget; the rest goes to feature extraction and probes


def run_demo(
    minutes: float = 9.0, out: str | Path = "runs/demo", overrides: Sequence[str] = (), progress: bool = True
) -> dict[str, Any]:
    """Pretrain within `minutes`, probe learned vs random encoders, write results.json, a table and plots."""
    t0 = time.perf_counter()
    # Size the schedule to the budget, so warmup and cosine decay both happen within it.
    cfg, step_s = budgeted_config(recipe_path("demo"), [f"logging.folder={out}", *overrides], minutes * PRETRAIN_SHARE)
    device = resolve_device(cfg.meta.device)
    logger.info(
        "demo: %.2f s/step measured; %d epochs fit in %.1f minutes",
        step_s,
        cfg.optimization.epochs,
        minutes * PRETRAIN_SHARE,
    )
    result = fit(cfg, progress=progress, env=DistEnv(device=device))
    # The baseline is the very initialisation I-JEPA started from: same architecture, same seed.
    random_enc = build_model(cfg).target_encoder
    learned = build_model(cfg).target_encoder
    assert result.checkpoint is not None  # fit checkpoints at the end of every run
    learned.load_state_dict(load_checkpoint(result.checkpoint)["target_encoder"])
    data = cfg.data.dataset
    assert data is not None  # the demo recipe names its dataset
    rows = []
    for name, enc in (("I-JEPA (target encoder)", learned), ("random init", random_enc)):
        for task in ("linear", "knn"):
            r = evaluate_encoder(enc, data, task, pooling="avg", device=device, progress=False)
            rows.append(replace(r, checkpoint=str(result.checkpoint) if enc is learned else "random", encoder=name))
    table = _table(rows)
    summary = {
        "minutes_budget": minutes,
        "seconds": round(time.perf_counter() - t0, 1),
        "pretrain_steps": result.steps,
        "epochs": result.epochs_completed,
        "last_loss": result.last_loss,
        "folder": str(result.folder),
        "results": [r.to_dict() for r in rows],
        "table": table,
    }
    if cfg.logging.plots:
        summary["plots"] = [str(p) for p in write_run_plots(result.folder, cfg)]
    Path(result.folder, "results.json").write_text(json.dumps(summary, indent=1, default=str))
    Path(result.folder, "results.md").write_text(table + "\n\n" + markdown_summary(rows) + "\n")
    return summary


def _table(rows: list[EvalResult]) -> str:
    by = {(r.encoder, r.task): r.top1 for r in rows}
    encoders = list(dict.fromkeys(r.encoder for r in rows))
    lines = ["| encoder | linear probe top-1 | kNN top-1 (k=20) |", "|---|---|---|"]
    for e in encoders:
        lines.append(f"| {e} | {by[(e, 'linear')]:.3f} | {by[(e, 'knn')]:.3f} |")
    return "\n".join(lines)
