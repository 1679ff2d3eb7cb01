"""The pretraining loop: `fit(cfg)` reads top to bottom; every piece it calls is tested on its own.

`fit` builds a `Run` (what the loop uses and never replaces) and a `LoopState` (where the loop stands)
with `setup`, then trains epoch after epoch; each function below takes both explicitly. What stops or
warns a run lives in `guards`, its checkpoints in `run_checkpoint`.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from typing import Callable

import torch

from ..config import Config
from ..core.distributed import DistEnv, all_reduce_mean, barrier, init_distributed, max_over_ranks
from ..data import make_loader
from ..models.ijepa import IJEPA
from .guards import NonFiniteLossError, StopSignals, check_finite, warn_spikes, watch_collapse
from .run_checkpoint import RunExistsError, checkpoint_bytes, write_run_checkpoint
from .setup import amp_dtype_for, initial_state, lr_scale, precision_for, prepare_run
from .state import FitResult, LoopState, Run
from .step import train_step  # looked up here at each step: tests and test hooks replace loop.train_step

__all__ = [
    "fit",
    "FitResult",
    "RunExistsError",
    "NonFiniteLossError",
    "EXIT_REQUEUE",
    "StopSignals",
    "amp_dtype_for",
    "precision_for",
    "lr_scale",
    "checkpoint_bytes",
]

logger = logging.getLogger("openjepa.train")
# Exit status of a run stopped by SIGTERM / SIGUSR1 after writing its checkpoint: EX_TEMPFAIL of
# sysexits.h ("try again later"). The generated sbatch script requeues the job on it.
EXIT_REQUEUE = 75


# --------------------------------------------------------------------------- the loop
def fit(
    cfg: Config,
    *,
    resume: bool = False,
    progress: bool = True,
    env: DistEnv | None = None,
    on_epoch_end: Callable[[IJEPA, int], dict[str, float]] | None = None,
) -> FitResult:
    """Pretrain I-JEPA as configured; with `resume`, continue bit-exactly from the newest good checkpoint.

    With several processes (torchrun, srun) the model is wrapped in DDP, or sharded with FSDP2
    when meta.fsdp is set; only rank 0 writes logs (besides each rank's `{tag}_r{rank}.csv`),
    checkpoints and the reference-format file. SIGTERM / SIGUSR1 stop the run after the current
    step with a checkpoint and stop_reason "preempted" (the CLI then exits with EXIT_REQUEUE).
    """
    env = env or init_distributed(cfg.meta.device)
    t0 = time.perf_counter()
    run, found = prepare_run(cfg, env, resume=resume, progress=progress, on_epoch_end=on_epoch_end, t0=t0)
    st = initial_state(run, found)
    try:
        with StopSignals() as stops:
            stop_reason = _run_epochs(run, st, stops)
            _drain(run, st)
            if stop_reason != "completed" or st.saved_step != st.step:
                _save(run, st, stop_reason)  # a completed run already checkpointed at its last step is not rewritten
            barrier(env)  # every rank returns once rank 0's last checkpoint is on disk
    finally:
        run.bar.close()
        run.run_log.close()
    skipped_images = getattr(getattr(run.train_set, "base", run.train_set), "num_skipped", 0)
    if skipped_images and env.is_main:
        logger.warning("%d unreadable image file(s) were skipped (named in the warnings above)", skipped_images)
    wait = st.data_wait
    if env.is_main and wait.run_wall > 0:
        logger.info("%.1f images/s over the loop, %.1f%% of it waiting for data", wait.imgs_per_s, 100 * wait.share)
    return FitResult(
        folder=run.folder,
        steps=st.step,
        epochs_completed=st.epoch,
        last_loss=st.last_loss,
        checkpoint=st.last_ckpt,
        seconds=time.perf_counter() - t0,
        stop_reason=stop_reason,
        skipped_steps=st.skips.total,
        skipped_images=skipped_images,
        rank=env.rank,
        world_size=env.world_size,
        imgs_per_s=wait.imgs_per_s,
        data_wait_share=wait.share,
    )


def _run_epochs(run: Run, st: LoopState, stops: StopSignals) -> str:
    """Train epoch after epoch until the schedule ends, max_steps is reached or a stop; returns why it stopped."""
    while st.epoch < run.cfg.optimization.epochs and st.step < run.total_steps:
        _train_epoch(run, st, stops)
        if st.stop_reason is not None or st.batch_in_epoch < run.batches_per_epoch:
            break  # stopped mid-epoch: the final checkpoint records where
        _end_epoch(run, st)
    if st.stop_reason is None:
        st.stop_reason = "max_steps" if run.total_steps <= st.step < run.full_steps else "completed"
    return st.stop_reason


def _train_epoch(run: Run, st: LoopState, stops: StopSignals) -> None:
    """Train on the current epoch from batch `st.batch_in_epoch` on, until its end, total_steps or a stop."""
    cfg, env, device = run.cfg, run.env, run.env.device
    accum, every = cfg.optimization.accum_steps, cfg.logging.checkpoint_every_steps
    run.train_set.set_epoch(st.epoch)
    run.collator.set_epoch(st.epoch, start_batch=st.batch_in_epoch)
    loader = make_loader(
        run.train_set,
        cfg.data.batch_size,
        run.collator,
        seed=cfg.meta.seed,
        epoch=st.epoch,
        num_workers=cfg.data.num_workers,
        pin_memory=cfg.data.pin_mem and device.type == "cuda",
        rank=env.rank,
        world_size=env.world_size,
        skip_batches=st.batch_in_epoch,
    )
    micro: list = []
    for (imgs, _), masks_enc, masks_pred in st.data_wait.batches(loader):
        micro.append(
            (
                imgs.to(device, non_blocking=True),
                [m.to(device, non_blocking=True) for m in masks_enc],
                [m.to(device, non_blocking=True) for m in masks_pred],
            )
        )
        if len(micro) < accum:
            continue
        if st.batch_in_epoch + len(micro) > run.batches_per_epoch:
            return  # leftover batches that cannot fill an accumulation step
        _step(run, st, micro)
        micro = []
        if every and st.step % every == 0:
            _save(run, st, "interval")
        st.stop_reason = _stop_requested(run, st, stops)
        if st.stop_reason is not None or st.step >= run.total_steps:
            return


def _step(run: Run, st: LoopState, micro: list) -> None:
    """One optimizer step on `micro` (accum_steps batches): train, log its row, watch for collapse, flush the log."""
    env, opt, log = run.env, run.cfg.optimization, run.cfg.logging
    st.step += 1
    position = st.step if opt.clock == "steps" else clock_position(run, st)
    lr, wd, momentum = run.schedule.at(position)
    run.model.set_reg_scale(run.schedule.reg_scale(position))
    result = train_step(
        run.net,
        run.optimizer,
        micro,
        lr,
        wd,
        momentum,
        amp_dtype=run.amp_dtype,
        grad_clip=opt.grad_clip,
        skip_nonfinite=opt.on_nonfinite == "skip",
        ema_fn=run.ema_fn,
        scaler=run.scaler,
    )
    st.batch_in_epoch += len(micro)
    loss = all_reduce_mean(result.loss, env)
    if st.skips.enabled:
        st.skips.record(result.finite)  # a skipped step left the model unchanged
    else:
        st.bad_step = torch.where((st.bad_step < 0) & ~torch.isfinite(loss), st.step, st.bad_step)
    now = time.perf_counter()
    images = sum(len(m[0]) for m in micro) * env.world_size
    imgs_per_s = images / max(now - st.t_step, 1e-9)
    wait_share = st.data_wait.end_step(now - st.t_step, images)
    _, masks_enc, masks_pred = micro[-1]  # mask sizes of the last batch: lists of (B, K) index tensors
    run.run_log.record(
        st.step,
        st.epoch,
        st.batch_in_epoch // opt.accum_steps - 1,
        loss,
        lr,
        wd,
        momentum,
        masks_enc[0].shape[1],
        masks_pred[0].shape[1],
        1000 * (now - st.t_step),
        imgs_per_s,
        wait_share,
    )
    st.t_step = now
    if log.collapse_every_steps and st.step % log.collapse_every_steps == 0 and (env.is_main or run.sharded):
        # sharded: every rank joins the target encoder's gathers, only rank 0 records
        watch_collapse(run.model, micro[0][0], run.run_log, st.step, record=env.is_main)
    run.bar.update(1)
    if st.step % log.log_freq == 0 or st.step == run.total_steps:
        losses = _drain(run, st)
        window_wait, slow_loader = st.data_wait.end_window(run.cfg.data.num_workers)
        if slow_loader and env.is_main:
            logger.warning(slow_loader)
        if losses:
            postfix = {"loss": f"{statistics.fmean(losses):.4f}", "lr": f"{lr:.2e}", "img_s": f"{imgs_per_s:.0f}"}
            run.bar.set_postfix(**postfix, data_wait=f"{window_wait:.0%}")


def _budget_seconds(run: Run, st: LoopState) -> float:
    """Seconds counted against max_minutes: this process's (clock=steps), the whole run's (clock=time)."""
    since_start = time.perf_counter() - run.t0
    return since_start + st.clock_offset if run.cfg.optimization.clock == "time" else since_start


def clock_position(run: Run, st: LoopState) -> int:
    """The schedule step that the elapsed share of the budget reaches (clock=time), in [1, schedule length]."""
    total = run.schedule.total_steps
    assert run.cfg.optimization.max_minutes is not None  # validation: clock=time needs a budget
    share = _budget_seconds(run, st) / (60 * run.cfg.optimization.max_minutes)
    return min(total, max(1, math.ceil(share * total)))


def _stop_requested(run: Run, st: LoopState, stops: StopSignals) -> str | None:
    """'preempted' (a stop signal), 'max_minutes' or None; with several ranks all ranks agree,
    at the steps where the log is written (a collective that waits for the device)."""
    opt, env = run.cfg.optimization, run.env
    local = (
        2
        if stops.received is not None
        else (1 if opt.max_minutes is not None and _budget_seconds(run, st) > 60 * opt.max_minutes else 0)
    )
    if env.distributed:
        if st.step % run.cfg.logging.log_freq and st.step < run.total_steps:
            return None
        local = max_over_ranks(local, env)
    reason = {0: None, 1: "max_minutes", 2: "preempted"}[local]
    if reason == "preempted" and env.is_main:
        logger.warning("stop signal received: checkpointing step %d and exiting (resume with --resume)", st.step)
    return reason


def _end_epoch(run: Run, st: LoopState) -> None:
    """Close a completed epoch: flush its log, checkpoint it when due (with the reference file), run the monitor."""
    env, opt, log = run.env, run.cfg.optimization, run.cfg.logging
    _drain(run, st)
    st.epoch, st.batch_in_epoch = st.epoch + 1, 0
    if st.epoch % log.checkpoint_every_epochs == 0 or st.epoch == opt.epochs:
        _save(run, st, "epoch", reference=True)
    st.epoch_losses = []
    if run.on_epoch_end is not None and log.eval_every_epochs and st.epoch % log.eval_every_epochs == 0:
        if env.is_main and not run.sharded:
            run.run_log.add_metrics(st.step, **run.on_epoch_end(run.model, st.epoch))
        barrier(env)


def _drain(run: Run, st: LoopState) -> list[float]:
    """Write the buffered log rows (the host sync), then check them: non-finite, skipped, spikes.

    Returns the finite losses written.
    """
    losses = run.run_log.flush()
    check_finite(st.bad_step, st.last_ckpt)
    st.skips.drain(st.step, st.last_ckpt)
    finite = [x for x in losses if math.isfinite(x)]
    warn_spikes(losses, st.recent, st.step - len(losses) + 1)
    st.recent.extend(finite)
    st.epoch_losses.extend(finite)
    return finite


def _save(run: Run, st: LoopState, reason: str, reference: bool = False) -> None:
    """Checkpoint the loop where it stands, after logging (and checking) every step the checkpoint covers."""
    _drain(run, st)  # never checkpoint a non-finite model
    st.last_ckpt, st.saved_step = write_run_checkpoint(run, st, reason, reference), st.step
