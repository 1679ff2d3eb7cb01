"""`openjepa pretrain --config FILE [--set key=value ...] [--resume]`."""

from __future__ import annotations

import argparse
import json
import logging

from ..config import load_config, recipe_path

logger = logging.getLogger("openjepa.cli")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `openjepa pretrain`."""
    p.add_argument("--config", "--fname", dest="config", help="YAML recipe (ours or the reference's schema)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, repeatable: --set optimization.lr=5e-4")
    p.add_argument("overrides_pos", nargs="*", metavar="KEY=VALUE", help="more dotted overrides")
    p.add_argument("--data", help="dataset spec (x.npz, folder:DIR, shapes:N); sets data.dataset")
    p.add_argument("--out", help="run folder; sets logging.folder")
    p.add_argument("--resume", action="store_true", help="continue from the newest good checkpoint in the run folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def overrides_from(args: argparse.Namespace) -> list[str]:
    """Every override the command line gives, --data/--out included."""
    extra = list(args.overrides) + list(getattr(args, "overrides_pos", []))
    if getattr(args, "data", None):
        extra.append(f"data.dataset={args.data}")
    if getattr(args, "out", None):
        extra.append(f"logging.folder={args.out}")
    return extra


def run(args: argparse.Namespace) -> int:
    """Pretrain, then write the run's plots."""
    from ..train.loop import fit
    from ..train.report import write_run_plots

    cfg = load_config(recipe_path(args.config) if args.config else None, overrides_from(args))
    monitor = None
    if cfg.logging.eval_every_epochs and cfg.data.dataset:
        from ..evaluate.runner import knn_monitor

        monitor = knn_monitor(cfg.data.dataset, cfg.data.crop_size)
    result = fit(cfg, resume=args.resume, progress=not args.no_progress, on_epoch_end=monitor)
    if cfg.logging.plots:
        write_run_plots(result.folder, cfg)
    print(json.dumps({"folder": str(result.folder), "steps": result.steps, "epochs": result.epochs_completed,
                      "last_loss": round(result.last_loss, 6), "checkpoint": str(result.checkpoint),
                      "seconds": round(result.seconds, 1), "stop_reason": result.stop_reason}))
    return 0
