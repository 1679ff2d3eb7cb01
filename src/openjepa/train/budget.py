"""Fit a schedule to a wall-clock budget: measure this machine's step time, then size the schedule in steps.

Used by the demo and bench/quality.py, so short runs still get a full warmup + cosine schedule
instead of being cut off early in warmup.
"""

from __future__ import annotations

import math
import time
from typing import Iterator

from ..config import Config, load_config
from .optim import make_optimizer
from .step import train_step


def timing_batches(cfg: Config, n: int) -> Iterator[tuple]:
    """`n` batches from the training data loader (its workers, augmentations and mask draws), as fit() sees them."""
    from ..data import make_loader
    from ..data.build import build_train_dataset
    from ..masks.build import build_collator

    dataset, collator = build_train_dataset(cfg), build_collator(cfg)
    epoch = 0
    while n > 0:  # a dataset smaller than n batches: go round again, as the next epoch would
        dataset.set_epoch(epoch)
        collator.set_epoch(epoch)
        for batch in make_loader(
            dataset, cfg.data.batch_size, collator, seed=cfg.meta.seed, epoch=epoch, num_workers=cfg.data.num_workers
        ):
            yield batch
            n -= 1
            if n == 0:
                return
        epoch += 1


def seconds_per_step(cfg: Config, steps: int = 8, warmup: int = 2) -> float:
    """Time real training steps of this config on its device, fed by its data loader (after `warmup` steps).

    Each timed step gets its own batch: a step's cost follows its mask draw (the context is cut to the
    batch minimum, so token counts vary by 2x between batches on small grids), and timing a single draw
    made budgets 20% off in either direction. The batches come from the loader's worker processes while
    the steps run, because on a small CPU those workers take cores from the step: timing pre-collated
    batches read ~10% fast, so budgeted schedules overran and were cut before their cosine ended.
    """
    import torch

    from ..core.distributed import resolve_device
    from ..models.build import build_model
    from .loop import amp_dtype_for

    device = resolve_device(cfg.meta.device)
    model = build_model(cfg).to(device)
    optimizer = make_optimizer(model.encoder, model.predictor, fused=device.type == "cuda")
    amp = amp_dtype_for(cfg, device)
    warmup = max(warmup, 1 if device.type == "cpu" else 3)  # GPU: cuBLAS handles, autotuning

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    accum = cfg.optimization.accum_steps  # one optimizer step consumes this many loader batches
    t0, done, micro = 0.0, 0, []
    for (imgs, _), masks_enc, masks_pred in timing_batches(cfg, (warmup + steps) * accum):
        micro.append((imgs.to(device), [m.to(device) for m in masks_enc], [m.to(device) for m in masks_pred]))
        if len(micro) == accum:
            train_step(model, optimizer, micro, 1e-4, 0.04, 0.996, amp_dtype=amp)
            micro, done = [], done + 1
            if done == warmup:  # the clock starts before the next batch is fetched: loading is part of a step
                sync()
                t0 = time.perf_counter()
    sync()
    return (time.perf_counter() - t0) / steps


def budgeted_config(
    path, overrides: list[str], minutes: float, min_epochs: int = 2, warmup_fraction: float = 0.1, clock: str = "time"
) -> tuple[Config, float]:
    """The config with its schedule sized to end within `minutes`, and `max_minutes` set as a cap.

    The step count is what the measured step time allows (at least `min_epochs` epochs); epochs are
    rounded up to hold it and `ipe_scale` (< 1) shortens the lr / wd / EMA schedules to end on that step.
    clock="steps": `max_steps` stops the run there, so a step-time estimate that is off ends the run early
    or cuts it. clock="time" (the default): the schedules follow the share of the budget elapsed
    (`optimization.clock`), the estimate only sets their resolution, and the run trains until the budget
    ends (with room for 2x the estimated steps). Returns (config, measured seconds per step).
    """
    from ..data.build import build_train_dataset

    cfg = load_config(path, overrides)
    step_s = seconds_per_step(cfg)
    ipe = max(1, len(build_train_dataset(cfg)) // cfg.data.batch_size // cfg.optimization.accum_steps)
    steps = max(min_epochs * ipe, int(60 * minutes / step_s))
    epochs = math.ceil((2 if clock == "time" else 1) * steps / ipe)
    # +0.5: Schedule.total_steps truncates ipe_scale x epochs x ipe with int(), which must give `steps`
    ipe_scale = (steps + 0.5) / (epochs * ipe)
    warmup = max(1.0, warmup_fraction * steps) / ipe  # in epochs, as the config counts it
    stop = [f"optimization.max_steps={steps}"] if clock == "steps" else []
    cfg = load_config(
        path,
        [
            *overrides,
            f"optimization.epochs={epochs}",
            f"optimization.warmup={warmup!r}",
            f"optimization.ipe_scale={ipe_scale!r}",
            f"optimization.clock={clock}",
            *stop,
            f"optimization.max_minutes={minutes}",
        ],
    )
    return cfg, step_s
