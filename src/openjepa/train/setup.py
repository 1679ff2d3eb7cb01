"""What `fit` builds before the loop: the data, schedule, networks, optimizer and logs of a `Run`,
resumed from a checkpoint when asked, and the `LoopState` the loop starts from."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..config import Config, save_config
from ..core.atomic import atomic_write_text
from ..core.checkpoint import check_free_space, remove_partial_writes
from ..core.distributed import DistEnv, barrier
from ..core.precision import Precision, requested_precision, resolve_precision
from ..data.build import build_train_dataset
from ..masks.build import build_collator
from ..models.build import build_model
from ..models.ijepa import IJEPA
from .compile import compile_with_fallback
from .ema import ema_update_
from .guards import SkipCounter
from .monitor import RunLogger
from .optim import make_optimizer
from .parallel import (
    ema_update_sharded_,
    enable_activation_checkpointing,
    is_sharded,
    shard_optimizer_state,
    wrap_model,
)
from .run_checkpoint import checkpoint_bytes, load_resumable
from .schedules import Schedule
from .state import LoopState, Run

__all__ = ["lr_scale", "precision_for", "amp_dtype_for", "prepare_run", "initial_state"]

logger = logging.getLogger("openjepa.train")


def lr_scale(cfg: Config, global_batch: int) -> float:
    """Factor applied to lr, start_lr and final_lr for a global batch (optimization.lr_scaling).

    "none" (default, the reference): 1 whatever the batch; the paper trains at lr 1e-3 for 2048.
    "linear": global / lr_reference_batch; "sqrt": its square root.
    """
    o = cfg.optimization
    ratio = global_batch / o.lr_reference_batch
    return {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[o.lr_scaling]


def precision_for(cfg: Config, device: torch.device) -> Precision:
    """meta.precision (or the reference's use_bfloat16) resolved for `device`: see core/precision.py."""
    return resolve_precision(requested_precision(cfg.meta.precision, cfg.meta.use_bfloat16), device)


def amp_dtype_for(cfg: Config, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the run's precision on `device` (None: fp32)."""
    return precision_for(cfg, device).amp_dtype


def prepare_run(
    cfg: Config,
    env: DistEnv,
    *,
    resume: bool,
    progress: bool,
    on_epoch_end: Callable[[IJEPA, int], dict[str, float]] | None,
    t0: float,
) -> tuple[Run, tuple[Path, dict] | None]:
    """Build everything the loop uses, resuming the networks and RNGs from a checkpoint if asked.

    Returns the run and the checkpoint resumed from (its path and state), if any.
    """
    folder = Path(cfg.logging.folder)
    train_set = build_train_dataset(cfg)
    collator = build_collator(cfg, env.rank, env.world_size)
    schedule, ipe, total_steps = _schedule(cfg, env, len(train_set))
    model = build_model(cfg).to(env.device)
    found = load_resumable(cfg, env, model, folder, resume)
    if env.is_main:
        remove_partial_writes(folder)
        check_free_space(folder, checkpoint_bytes(model))
        save_config(cfg, folder / "params-ijepa.yaml")
    barrier(env)
    precision = _record_precision(cfg, env, folder)
    net, optimizer = _networks(cfg, env, model, found[1]["optimizer"] if found is not None else None)
    sharded = is_sharded(model)
    if sharded and on_epoch_end is not None and env.is_main:
        logger.warning(
            "the end-of-epoch monitor is skipped with meta.fsdp (the networks are sharded); "
            "evaluate the checkpoints instead"
        )
    run_log, bar = _logs(cfg, env, folder, total_steps, found[1]["step"] if found is not None else None, progress)
    run = Run(
        cfg=cfg,
        env=env,
        folder=folder,
        train_set=train_set,
        collator=collator,
        schedule=schedule,
        ipe=ipe,
        total_steps=total_steps,
        model=model,
        net=net,
        optimizer=optimizer,
        ema_fn=ema_update_sharded_ if sharded else ema_update_,
        sharded=sharded,
        amp_dtype=precision.amp_dtype,
        run_log=run_log,
        bar=bar,
        on_epoch_end=on_epoch_end,
        t0=t0,
        scaler=torch.amp.GradScaler(env.device.type) if precision.name == "fp16" else None,
    )
    return run, found


def _record_precision(cfg: Config, env: DistEnv, folder: Path) -> Precision:
    """The run's precision on this device, logged and written to `precision.json` by rank 0."""
    precision = precision_for(cfg, env.device)
    if env.is_main:
        logger.info("precision %s (meta.precision=%s): %s", precision.name, precision.requested, precision.reason)
        atomic_write_text(folder / "precision.json", json.dumps(precision.to_dict(), indent=1))
    return precision


def _logs(
    cfg: Config, env: DistEnv, folder: Path, total_steps: int, resume_step: int | None, progress: bool
) -> tuple[RunLogger, tqdm]:
    """The run's step log (continued after `resume_step` when resuming) and its progress bar."""
    run_log = RunLogger(
        folder,
        cfg.logging.write_tag,
        env.rank,
        env.is_main,
        cfg.logging.tensorboard,
        resume_step=resume_step,
    )
    bar = tqdm(
        total=total_steps,
        initial=resume_step if resume_step is not None else 0,
        disable=not (progress and env.is_main),
        unit="step",
        dynamic_ncols=True,
        desc="pretrain",
    )
    return run_log, bar


def _schedule(cfg: Config, env: DistEnv, n_images: int) -> tuple[Schedule, int, int]:
    """The lr / weight-decay / EMA schedule, steps per epoch and total steps for `n_images` over the ranks."""
    o = cfg.optimization
    batches_per_epoch = n_images // (cfg.data.batch_size * env.world_size)
    ipe = batches_per_epoch // o.accum_steps
    if ipe < 1:
        raise ValueError(
            f"{n_images} images are too few for one step of batch {cfg.data.batch_size} "
            f"x {env.world_size} ranks x {o.accum_steps} accumulation; lower data.batch_size"
        )
    if env.distributed and o.clock == "time":  # ranks would read different clocks and step with different lrs
        raise ValueError("optimization.clock=time runs on one process; use optimization.clock=steps with several")
    global_batch = cfg.data.batch_size * env.world_size * o.accum_steps
    scale = lr_scale(cfg, global_batch)
    schedule = Schedule(
        ipe,
        o.epochs,
        o.warmup,
        o.start_lr * scale,
        o.lr * scale,
        o.final_lr * scale,
        o.weight_decay,
        o.final_weight_decay,
        (o.ema[0], o.ema[1]),
        o.ipe_scale,
        o.reg_final_scale,
    )
    total_steps = ipe * o.epochs if o.max_steps is None else min(ipe * o.epochs, o.max_steps)
    if env.distributed and env.is_main:
        logger.info(
            "%d processes (%s), global batch %d = %d per process x %d x %d accumulation; lr %.3g "
            "(optimization.lr_scaling=%s)",
            env.world_size,
            "FSDP2" if cfg.meta.fsdp else "DDP",
            global_batch,
            cfg.data.batch_size,
            env.world_size,
            o.accum_steps,
            o.lr * scale,
            o.lr_scaling,
        )
    return schedule, ipe, total_steps


def _networks(
    cfg: Config, env: DistEnv, model: IJEPA, opt_state: dict | None
) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """Wrap `model` for the processes (DDP / FSDP2, compiled if asked) and build its optimizer.

    Returns (what the step calls, the optimizer), the optimizer loaded from `opt_state` when resuming.
    """
    if cfg.meta.activation_checkpointing:
        enable_activation_checkpointing(model)
    net = wrap_model(model, env, fsdp=cfg.meta.fsdp)  # DDP(model), or model itself (sharded in place, or one process)
    if cfg.meta.compile:
        # Falls back to eager (with a warning) if compiling fails or is not faster on this machine.
        net = compile_with_fallback(net, dynamic=True, probe_steps=5, calls_per_step=cfg.optimization.accum_steps)
    # built after sharding: FSDP2 replaces the parameters by DTensors
    optimizer = make_optimizer(
        model.encoder,
        model.predictor,
        (cfg.optimization.betas[0], cfg.optimization.betas[1]),
        cfg.optimization.eps,
        fused=env.device.type == "cuda",
    )
    if opt_state is not None:
        optimizer.load_state_dict(shard_optimizer_state(opt_state, optimizer) if is_sharded(model) else opt_state)
    return net, optimizer


def initial_state(run: Run, found: tuple[Path, dict] | None) -> LoopState:
    """Step 0, or where the resumed checkpoint stood (its step, epoch, batch and skipped-step count)."""
    skip = run.cfg.optimization.on_nonfinite == "skip"
    bad_step = torch.full((), -1, dtype=torch.long, device=run.env.device)  # first non-finite step, no sync
    if found is None:
        return LoopState(bad_step=bad_step, skips=SkipCounter(skip))
    path, state = found
    return LoopState(
        bad_step=bad_step,
        skips=SkipCounter(skip, state.get("skipped_steps", 0)),
        step=state["step"],
        epoch=state["epoch"],
        batch_in_epoch=state["batch_in_epoch"],
        last_ckpt=path,
        saved_step=state["step"],
        clock_offset=state.get("train_seconds", 0.0),
    )
