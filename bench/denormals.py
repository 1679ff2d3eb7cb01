"""Training-step time with subnormals flushed to zero (FTZ/DAZ, what `openjepa` sets) against kept.

Steps a run's checkpoint (weights and AdamW state) through the same batches of its own training data
and masks, in two fresh worker processes: one sets `flush_denormals()` before its first parallel op
(so the OpenMP workers inherit it), one keeps subnormals. Each worker times `--steps` steps after
one untimed step; the workers run one after the other, `--rounds` times, alternating which goes
first, and the medians are reported. Prints one JSON line; `speedup` = kept / flushed seconds.

    python bench/denormals.py --run runs/val30/shipped-s0
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch


def worker(run: str, step: int | None, steps: int, flush: bool) -> float:
    """Seconds per training step from `run`'s checkpoint, with or without flushing (fresh process)."""
    if flush:
        from openjepa.core.precision import flush_denormals

        flush_denormals()
    from openjepa.config import load_config
    from openjepa.core.checkpoint import list_checkpoints, load_checkpoint
    from openjepa.data.build import build_train_dataset
    from openjepa.data.loader import make_loader
    from openjepa.masks.build import build_collator
    from openjepa.models.build import build_model
    from openjepa.train.optim import make_optimizer
    from openjepa.train.step import train_step

    cfg = load_config(Path(run) / "params-ijepa.yaml")
    ckpts = dict(list_checkpoints(Path(run)))
    state = load_checkpoint(ckpts[step if step is not None else max(ckpts)])
    model = build_model(cfg)
    for name in ("encoder", "predictor", "target_encoder"):
        getattr(model, name).load_state_dict(state[name])
    opt = make_optimizer(model.encoder, model.predictor, fused=True)
    opt.load_state_dict(state["optimizer"])
    loader = make_loader(build_train_dataset(cfg), cfg.data.batch_size, collate_fn=build_collator(cfg))
    batches = []
    for data, masks_enc, masks_pred in loader:  # the collator yields ((imgs, labels), masks, masks)
        batches.append((data[0], masks_enc, masks_pred))
        if len(batches) == steps + 1:
            break
    lr, wd, momentum = cfg.optimization.final_lr, cfg.optimization.final_weight_decay, cfg.optimization.ema[1]
    train_step(model, opt, [batches[0]], lr, wd, momentum)  # untimed: allocator and thread warm-up
    start = time.perf_counter()
    for batch in batches[1:]:
        train_step(model, opt, [batch], lr, wd, momentum)
    return (time.perf_counter() - start) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a run folder with checkpoints")
    ap.add_argument("--step", type=int, help="checkpoint step (default: the last)")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per worker")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--worker", choices=["flush", "keep"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(worker(args.run, args.step, args.steps, args.worker == "flush"))
        return
    times: dict[str, list[float]] = {"flush": [], "keep": []}
    for r in range(args.rounds):
        for mode in ("flush", "keep") if r % 2 == 0 else ("keep", "flush"):
            cmd = [sys.executable, __file__, "--run", args.run, "--steps", str(args.steps), "--worker", mode]
            cmd += ["--step", str(args.step)] if args.step is not None else []
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            times[mode].append(float(out.strip().splitlines()[-1]))
    from openjepa.core.precision import cpu_summary

    flushed, kept = statistics.median(times["flush"]), statistics.median(times["keep"])
    result = {
        "bench": "denormals",
        "run": args.run,
        "seconds_per_step": {"flushed": round(flushed, 4), "kept": round(kept, 4)},
        "speedup": round(kept / flushed, 3),
        "rounds": times,
        "cpu": cpu_summary(),
        "torch": torch.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
