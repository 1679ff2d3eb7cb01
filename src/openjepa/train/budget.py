"""Fit a schedule to a wall-clock budget: measure this machine's step time, then size the epochs.

Used by the demo and bench/quality.py, so short runs still get a full warmup + cosine schedule
instead of being cut off early in warmup.
"""

from __future__ import annotations

import time

from ..config import Config, load_config
from .optim import make_optimizer
from .step import train_step


def timing_batches(cfg: Config, n: int) -> list[tuple]:
    """`n` collated batches with independent mask draws, as the training loop would see them."""
    from .loop import build_collator, build_train_dataset

    dataset, collator = build_train_dataset(cfg), build_collator(cfg)
    bs = cfg.data.batch_size
    return [collator([dataset[(k * bs + i) % len(dataset)] for i in range(bs)]) for k in range(n)]


def seconds_per_step(cfg: Config, steps: int = 6) -> float:
    """Time real training steps of this config on its device (after one warm-up step).

    Each timed step gets its own batch: a step's cost follows its mask draw (the context is cut to the
    batch minimum, so token counts vary by 2x between batches on small grids), and timing a single draw
    made budgets 20% off in either direction.
    """
    import torch

    from ..distributed import resolve_device
    from .loop import amp_dtype_for, build_model

    device = resolve_device(cfg.meta.device)
    model = build_model(cfg).to(device)
    optimizer = make_optimizer(model.encoder, model.predictor, fused=device.type == "cuda")
    micros = [[(b[0][0].to(device), [m.to(device) for m in b[1]], [m.to(device) for m in b[2]])]
              for b in timing_batches(cfg, steps + 1)]
    amp = amp_dtype_for(cfg, device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(1 if device.type == "cpu" else 3):  # warm-up (cuBLAS handles, autotuning)
        train_step(model, optimizer, micros[0], 1e-4, 0.04, 0.996, amp_dtype=amp)
    sync()
    t0 = time.perf_counter()
    for micro in micros[1:]:
        train_step(model, optimizer, micro, 1e-4, 0.04, 0.996, amp_dtype=amp)
    sync()
    return (time.perf_counter() - t0) / steps


def budgeted_config(path, overrides: list[str], minutes: float, min_epochs: int = 2,
                    warmup_fraction: float = 0.1) -> tuple[Config, float]:
    """The config with `epochs`/`warmup` sized so its schedule ends within `minutes`, and `max_minutes` set.

    Returns (config, measured seconds per step).
    """
    from .loop import build_train_dataset

    cfg = load_config(path, overrides)
    step_s = seconds_per_step(cfg)
    steps_per_epoch = max(1, len(build_train_dataset(cfg)) // cfg.data.batch_size // cfg.optimization.accum_steps)
    epochs = max(min_epochs, int(60 * minutes / step_s) // steps_per_epoch)
    warmup = max(1, round(warmup_fraction * epochs))
    cfg = load_config(path, [*overrides, f"optimization.epochs={epochs}", f"optimization.warmup={warmup}",
                             f"optimization.max_minutes={minutes}"])
    return cfg, step_s
