"""The pretraining loop: `fit(cfg)` reads top to bottom; every piece it calls is tested on its own."""

from __future__ import annotations

import logging
import math
import os
import signal
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..config import BLOCK_SCALES, Config, config_to_dict, load_config, save_config
from ..data import build_dataset, make_loader, make_pretrain_transforms
from ..data.loader import STOP_SIGNALS  # SIGTERM, SIGUSR1: loader workers ignore them, the loop handles them
from ..data.seeded import SeededTransformDataset
from ..data.shards import SHARDS_PREFIX, ShardDataset
from ..distributed import DistEnv, all_reduce_mean, barrier, init_distributed, max_over_ranks
from ..masks import MultiBlockMaskCollator, RandomMaskCollator
from ..models.ijepa import IJEPA
from .checkpoint import (CheckpointError, CheckpointWriteError, atomic_save, check_free_space, checkpoint_path,
                         find_resumable, list_checkpoints, remove_partial_writes, save_checkpoint)
from .monitor import RunLogger, collapse_stats, collapse_warning
from .ema import ema_update_
from .compile import compile_with_fallback
from .optim import make_optimizer
from .parallel import (enable_activation_checkpointing, ema_update_sharded_, full_state_dicts, is_sharded,
                       shard_optimizer_state, wrap_model)
from .schedules import Schedule
from .step import train_step, unwrap

logger = logging.getLogger("openjepa.train")
MAX_CONSECUTIVE_SKIPS = 50  # on_nonfinite=skip stops the run after this many non-finite steps in a row
# Exit status of a run stopped by SIGTERM / SIGUSR1 after writing its checkpoint: EX_TEMPFAIL of
# sysexits.h ("try again later"). The generated sbatch script requeues the job on it.
EXIT_REQUEUE = 75


class RunExistsError(FileExistsError):
    """The run folder already holds checkpoints and --resume was not given."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite and the run was stopped."""


@dataclass
class FitResult:
    """What a finished (or stopped) run leaves behind."""

    folder: Path
    steps: int
    epochs_completed: int
    last_loss: float
    checkpoint: Path | None
    seconds: float
    stop_reason: str
    skipped_steps: int = 0  # steps skipped for a non-finite loss (optimization.on_nonfinite=skip)
    skipped_images: int = 0  # unreadable image files skipped (counted in this process; workers log theirs)
    rank: int = 0  # the process that returned this (only rank 0 writes logs, checkpoints and plots)
    world_size: int = 1


# --------------------------------------------------------------------------- building blocks
def build_train_dataset(cfg: Config) -> SeededTransformDataset | ShardDataset:
    """The training images with the reference's augmentations, seeded per sample.

    `data.dataset: "shards:/data/shard-{000000..000099}.tar"` streams WebDataset-style tar shards.
    """
    d = cfg.data
    spec = d.dataset or f"folder:{os.path.join(d.root_path, d.image_folder)}"
    transform = make_pretrain_transforms(d.crop_size, tuple(d.crop_scale), d.use_horizontal_flip,
                                         d.use_color_distortion, d.use_gaussian_blur, d.color_jitter_strength)
    if spec.startswith(SHARDS_PREFIX):
        shards = ShardDataset(spec, transform, seed=cfg.meta.seed, shuffle_buffer=d.shuffle_buffer)
        if len(shards) == 0:
            raise ValueError(f"the shards of {spec!r} hold no samples")
        return shards
    kwargs: dict = {}
    if spec.lower().startswith(("shapes", "demo")):
        kwargs["img_size"] = d.crop_size
    elif d.subset_file and not spec.lower().endswith(".npz"):
        kwargs["subset_file"] = d.subset_file
    base = build_dataset(spec, split="train", **kwargs)
    if len(base) == 0:
        raise ValueError(f"dataset {spec!r} is empty; point data.dataset or data.root_path at images")
    return SeededTransformDataset(base, transform, seed=cfg.meta.seed)


def build_collator(cfg: Config, rank: int = 0, world_size: int = 1) -> MultiBlockMaskCollator:
    """The mask collator named by mask.strategy ('block': one 0.6-scale target, context = the rest of the image).

    Each of `world_size` ranks gets its own mask stream; rank 0 of 1 is the single-process one.
    """
    m, seed = cfg.mask, cfg.meta.seed
    if m.strategy == "random":
        collator: MultiBlockMaskCollator = RandomMaskCollator(cfg.data.crop_size, m.patch_size, seed=seed)
    else:
        enc_scale, pred_scale, npred = m.enc_mask_scale, m.pred_mask_scale, m.num_pred_masks
        if m.strategy == "block":  # paper Table 6 "block": one target of scale 0.6, the context is the rest
            enc_scale, pred_scale = BLOCK_SCALES["mask.enc_mask_scale"], BLOCK_SCALES["mask.pred_mask_scale"]
            npred = 1
        collator = MultiBlockMaskCollator(
            cfg.data.crop_size, m.patch_size, enc_scale, pred_scale, m.aspect_ratio,
            m.num_enc_masks, npred, m.min_keep, m.allow_overlap, seed=seed,
            independent_scale_aspect=m.independent_scale_aspect, include_last_row_col=m.include_last_row_col,
            allow_full_size_blocks=m.allow_full_size_blocks, truncate=m.truncate)
    collator.set_rank(rank, world_size)
    return collator


def run_mask_collator(folder: Path | None, img_size: int, patch_size: int) -> tuple[MultiBlockMaskCollator, str]:
    """The run's mask collator (its params-ijepa.yaml) at the encoder's size, or the defaults."""
    params = folder / "params-ijepa.yaml" if folder is not None else None
    over = [f"data.crop_size={img_size}", f"mask.patch_size={patch_size}"]
    if params is not None and params.is_file():
        return build_collator(load_config(params, over)), f"mask settings of {params.name}"
    # No run recipe: the reference multi-block settings, with min_keep small enough for tiny grids.
    grid = (img_size // patch_size) ** 2
    return (build_collator(load_config(None, over + [f"mask.min_keep={min(10, max(0, grid // 16))}"])),
            "the reference's multi-block mask settings (no params-ijepa.yaml next to the checkpoint)")


def lr_scale(cfg: Config, global_batch: int) -> float:
    """Factor applied to lr, start_lr and final_lr for a global batch (optimization.lr_scaling).

    "none" (default, the reference): 1 whatever the batch; the paper trains at lr 1e-3 for 2048.
    "linear": global / lr_reference_batch; "sqrt": its square root.
    """
    o = cfg.optimization
    ratio = global_batch / o.lr_reference_batch
    return {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[o.lr_scaling]


def build_model(cfg: Config) -> IJEPA:
    """Encoder, predictor and target encoder from the config (seeded, so every rank starts equal)."""
    torch.manual_seed(cfg.meta.seed)
    extra = {"depth": cfg.meta.depth} if cfg.meta.depth else {}
    return IJEPA.build(cfg.meta.model_name, cfg.mask.patch_size, cfg.data.crop_size,
                       pred_depth=cfg.meta.pred_depth, pred_emb_dim=cfg.meta.pred_emb_dim,
                       predictor_heads=cfg.meta.predictor_heads, init=cfg.meta.init,
                       target_type=cfg.optimization.target, target_from=cfg.optimization.target_from,
                       loss=cfg.optimization.loss, **extra)


def amp_dtype_for(cfg: Config, device: torch.device) -> torch.dtype | None:
    """bf16 autocast where the device has bf16 units (CUDA); CPUs run fp32 (exact and faster there)."""
    if not cfg.meta.use_bfloat16:
        return None
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    logger.info("meta.use_bfloat16 is set but %s has no fast bf16; training in fp32", device)
    return None


def checkpoint_bytes(model: IJEPA) -> int:
    """Rough size of one checkpoint: three networks plus two AdamW moments, fp32."""
    n = sum(p.numel() for p in model.parameters())
    n_trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return 4 * (n + 2 * n_trained) + (1 << 20)


def _capture_rng() -> dict:
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def _restore_rng(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


# --------------------------------------------------------------------------- the loop
def fit(cfg: Config, *, resume: bool = False, progress: bool = True, env: DistEnv | None = None,
        on_epoch_end: Callable[[IJEPA, int], dict[str, float]] | None = None) -> FitResult:
    """Pretrain I-JEPA as configured; with `resume`, continue bit-exactly from the newest good checkpoint.

    With several processes (torchrun, srun) the model is wrapped in DDP, or sharded with FSDP2
    when meta.fsdp is set; only rank 0 writes logs (besides each rank's `{tag}_r{rank}.csv`),
    checkpoints and the reference-format file. SIGTERM / SIGUSR1 stop the run after the current
    step with a checkpoint and stop_reason "preempted" (the CLI then exits with EXIT_REQUEUE).
    """
    env = env or init_distributed(cfg.meta.device)
    device, folder = env.device, Path(cfg.logging.folder)
    opt_cfg, log_cfg = cfg.optimization, cfg.logging
    t0 = time.perf_counter()

    train_set = build_train_dataset(cfg)
    collator = build_collator(cfg, env.rank, env.world_size)
    batches_per_epoch = len(train_set) // (cfg.data.batch_size * env.world_size)
    ipe = batches_per_epoch // opt_cfg.accum_steps
    if ipe < 1:
        raise ValueError(f"{len(train_set)} images are too few for one step of batch {cfg.data.batch_size} "
                         f"x {env.world_size} ranks x {opt_cfg.accum_steps} accumulation; lower data.batch_size")
    global_batch = cfg.data.batch_size * env.world_size * opt_cfg.accum_steps
    scale = lr_scale(cfg, global_batch)
    schedule = Schedule(ipe, opt_cfg.epochs, opt_cfg.warmup, opt_cfg.start_lr * scale, opt_cfg.lr * scale,
                        opt_cfg.final_lr * scale, opt_cfg.weight_decay, opt_cfg.final_weight_decay,
                        tuple(opt_cfg.ema), opt_cfg.ipe_scale)
    total_steps = ipe * opt_cfg.epochs
    if opt_cfg.max_steps is not None:
        total_steps = min(total_steps, opt_cfg.max_steps)
    if env.distributed and env.is_main:
        logger.info("%d processes (%s), global batch %d = %d per process x %d x %d accumulation; lr %.3g "
                    "(optimization.lr_scaling=%s)", env.world_size, "FSDP2" if cfg.meta.fsdp else "DDP",
                    global_batch, cfg.data.batch_size, env.world_size, opt_cfg.accum_steps, opt_cfg.lr * scale,
                    opt_cfg.lr_scaling)

    model = build_model(cfg).to(device)
    step, epoch, batch_in_epoch = 0, 0, 0
    found = find_resumable(folder, map_location=device) if (resume or cfg.meta.load_checkpoint) else None
    if found is not None:
        path, state = found
        _check_arch(state, model, path)
        model.encoder.load_state_dict(state["encoder"])
        model.predictor.load_state_dict(state["predictor"])
        model.target_encoder.load_state_dict(state["target_encoder"])
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        _restore_rng(state["rng"])
        if env.is_main:
            logger.info("resumed from %s (step %d, epoch %d, batch %d)", path, step, epoch + 1, batch_in_epoch)
    elif list_checkpoints(folder):
        raise RunExistsError(f"{folder} already holds checkpoints (newest step "
                             f"{list_checkpoints(folder)[-1][0]}); pass --resume to continue that run, "
                             f"or set logging.folder to a new folder")
    elif resume and env.is_main:
        logger.info("--resume: no checkpoint in %s yet, starting at step 0", folder)

    if env.is_main:
        remove_partial_writes(folder)
        check_free_space(folder, checkpoint_bytes(model))
        save_config(cfg, folder / "params-ijepa.yaml")
    barrier(env)
    amp_dtype = amp_dtype_for(cfg, device)
    if cfg.meta.activation_checkpointing:
        enable_activation_checkpointing(model)
    net = wrap_model(model, env, fsdp=cfg.meta.fsdp)  # DDP(model), or model itself (sharded in place, or one process)
    if cfg.meta.compile:
        # Falls back to eager (with a warning) if compiling fails or is not faster on this machine.
        net = compile_with_fallback(net, dynamic=True, probe_steps=5, calls_per_step=opt_cfg.accum_steps)
    sharded = is_sharded(model)
    # built after sharding: FSDP2 replaces the parameters by DTensors
    optimizer = make_optimizer(model.encoder, model.predictor, tuple(opt_cfg.betas), opt_cfg.eps,
                               fused=device.type == "cuda")
    if found is not None:
        opt_state = found[1]["optimizer"]
        optimizer.load_state_dict(shard_optimizer_state(opt_state, optimizer) if sharded else opt_state)
    ema_fn = ema_update_sharded_ if sharded else ema_update_
    if sharded and on_epoch_end is not None and env.is_main:
        logger.warning("the end-of-epoch monitor is skipped with meta.fsdp (the networks are sharded); "
                       "evaluate the checkpoints instead")
    run_log = RunLogger(folder, log_cfg.write_tag, env.rank, env.is_main, log_cfg.tensorboard,
                        resume_step=step if found is not None else None)
    bar = tqdm(total=total_steps, initial=step, disable=not (progress and env.is_main), unit="step",
               dynamic_ncols=True, desc="pretrain")

    def drain() -> list[float]:
        """Write the buffered log rows (the host sync), then check them: non-finite, skipped, spikes."""
        losses = run_log.flush()
        _check_finite(bad_step, last_ckpt)
        skips.drain(step, last_ckpt)
        finite = [x for x in losses if math.isfinite(x)]
        _spikes(losses, recent, step - len(losses) + 1)
        recent.extend(finite)
        epoch_losses.extend(finite)
        return finite

    def save(reason: str, reference: bool = False) -> Path:
        """Checkpoint (rank 0 writes; with FSDP every rank joins the gather); returns its path on every rank."""
        drain()  # never checkpoint a non-finite model, and log every step the checkpoint covers
        nets = full_state_dicts(model, optimizer, env)
        if not env.is_main:
            return checkpoint_path(folder, step)
        state = {"config": config_to_dict(cfg), "arch": model.arch(), "encoder": nets["encoder"],
                 "predictor": nets["predictor"], "target_encoder": nets["target_encoder"],
                 "optimizer": nets["optimizer"], "step": step, "epoch": epoch,
                 "batch_in_epoch": batch_in_epoch, "rng": _capture_rng(), "reason": reason,
                 "loss": recent[-1] if recent else float("nan"), "skipped_steps": skips.total}
        try:
            path = save_checkpoint(state, folder, step, keep_last=log_cfg.keep_last,
                                   min_free_bytes=checkpoint_bytes(model))
        except OSError as e:
            raise _write_failed(e, f"the step {step} checkpoint", last_ckpt) from e
        if reference:
            try:
                _write_reference_checkpoint(nets, cfg, epoch, epoch_losses, env)
            except OSError as e:
                raise _write_failed(e, "the reference-format checkpoint", path) from e
        return path

    def should_stop() -> str | None:
        """'preempted' (a stop signal), 'max_minutes' or None; with several ranks all ranks agree,
        at the steps where the log is written (a collective that waits for the device)."""
        local = 2 if stops.received is not None else (
            1 if opt_cfg.max_minutes is not None and (time.perf_counter() - t0) > 60 * opt_cfg.max_minutes else 0)
        if env.distributed:
            if step % log_cfg.log_freq and step < total_steps:
                return None
            local = max_over_ranks(local, env)
        return {0: None, 1: "max_minutes", 2: "preempted"}[local]

    bad_step = torch.full((), -1, dtype=torch.long, device=device)  # first non-finite step, no sync
    skips = _SkipCounter(opt_cfg.on_nonfinite == "skip", found[1].get("skipped_steps", 0) if found else 0)
    recent: list[float] = []
    epoch_losses: list[float] = []
    last_ckpt: Path | None = found[0] if found else None  # not the newest file: that one may be corrupt
    stop_reason = "completed"
    t_step = time.perf_counter()
    try:
        with StopSignals() as stops:
            while epoch < opt_cfg.epochs and step < total_steps:
                train_set.set_epoch(epoch)
                collator.set_epoch(epoch, start_batch=batch_in_epoch)
                loader = make_loader(train_set, cfg.data.batch_size, collator, seed=cfg.meta.seed, epoch=epoch,
                                     num_workers=cfg.data.num_workers,
                                     pin_memory=cfg.data.pin_mem and device.type == "cuda",
                                     rank=env.rank, world_size=env.world_size, skip_batches=batch_in_epoch)
                micro: list = []
                for (imgs, _), masks_enc, masks_pred in loader:
                    micro.append((imgs.to(device, non_blocking=True),
                                  [m.to(device, non_blocking=True) for m in masks_enc],
                                  [m.to(device, non_blocking=True) for m in masks_pred]))
                    if len(micro) < opt_cfg.accum_steps:
                        continue
                    if batch_in_epoch + len(micro) > ipe * opt_cfg.accum_steps:
                        break  # leftover batches that cannot fill an accumulation step
                    step += 1
                    lr, wd, momentum = schedule.at(step)
                    result = train_step(net, optimizer, micro, lr, wd, momentum, amp_dtype=amp_dtype,
                                        grad_clip=opt_cfg.grad_clip, skip_nonfinite=opt_cfg.on_nonfinite == "skip",
                                        ema_fn=ema_fn)
                    batch_in_epoch += len(micro)
                    loss = all_reduce_mean(result.loss, env)
                    if skips.enabled:
                        skips.record(result.finite)  # a skipped step left the model unchanged
                    else:
                        bad_step = torch.where((bad_step < 0) & ~torch.isfinite(loss), step, bad_step)
                    now = time.perf_counter()
                    imgs_per_s = sum(len(m[0]) for m in micro) * env.world_size / max(now - t_step, 1e-9)
                    run_log.record(step, epoch, batch_in_epoch // opt_cfg.accum_steps - 1, loss, lr, wd, momentum,
                                   masks_enc[0].shape[1], masks_pred[0].shape[1], 1000 * (now - t_step), imgs_per_s)
                    t_step = now
                    if log_cfg.collapse_every_steps and step % log_cfg.collapse_every_steps == 0 and (
                            env.is_main or sharded):  # sharded: every rank joins the target encoder's gathers
                        _watch_collapse(model, micro[0][0], run_log, step, record=env.is_main)
                    micro = []
                    bar.update(1)
                    if step % log_cfg.log_freq == 0 or step == total_steps:
                        losses = drain()
                        if losses:
                            bar.set_postfix(loss=f"{statistics.fmean(losses):.4f}", lr=f"{lr:.2e}",
                                            img_s=f"{imgs_per_s:.0f}")
                    if log_cfg.checkpoint_every_steps and step % log_cfg.checkpoint_every_steps == 0:
                        last_ckpt = save("interval")
                    reason = should_stop()
                    if reason is not None:
                        stop_reason = reason
                        if reason == "preempted" and env.is_main:
                            logger.warning("stop signal received: checkpointing step %d and exiting (resume "
                                           "with --resume)", step)
                        break
                    if step >= total_steps:
                        break
                if stop_reason != "completed" or batch_in_epoch < ipe * opt_cfg.accum_steps:
                    break  # stopped mid-epoch: the checkpoint below records where
                drain()
                epoch, batch_in_epoch = epoch + 1, 0
                if epoch % log_cfg.checkpoint_every_epochs == 0 or epoch == opt_cfg.epochs:
                    last_ckpt = save("epoch", reference=True)
                epoch_losses = []
                if on_epoch_end is not None and log_cfg.eval_every_epochs and epoch % log_cfg.eval_every_epochs == 0:
                    if env.is_main and not sharded:
                        run_log.add_metrics(step, **on_epoch_end(model, epoch))
                    barrier(env)
            if step >= total_steps and stop_reason == "completed" and step < ipe * opt_cfg.epochs:
                stop_reason = "max_steps"
            drain()
            if stop_reason != "completed" or (last_ckpt is None or not last_ckpt.name.endswith(f"{step:08d}.pt")):
                last_ckpt = save(stop_reason)
            barrier(env)  # every rank returns once rank 0's last checkpoint is on disk
    finally:
        bar.close()
        run_log.close()
    skipped_images = getattr(getattr(train_set, "base", train_set), "num_skipped", 0)
    if skipped_images and env.is_main:
        logger.warning("%d unreadable image file(s) were skipped (named in the warnings above)", skipped_images)
    return FitResult(folder, step, epoch, recent[-1] if recent else float("nan"), last_ckpt,
                     time.perf_counter() - t0, stop_reason, skips.total, skipped_images, env.rank, env.world_size)


class StopSignals:
    """While active (in the main thread), SIGTERM and SIGUSR1 set `received` instead of killing.

    The loop checks it after each step (with several ranks, at each log step, all ranks agreeing),
    then checkpoints and stops. A second signal of the same kind acts as it did before (by default
    it terminates), so a stuck run can still be stopped.
    """

    def __init__(self, names: tuple[str, ...] = STOP_SIGNALS) -> None:
        self.names, self.received = names, None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for name in self.names:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.received = signum
        previous = self._previous.get(signum)
        signal.signal(signum, previous if previous is not None else signal.SIG_DFL)

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)  # type: ignore[arg-type]
        self._previous.clear()


def _check_arch(state: dict, model: IJEPA, path: Path) -> None:
    """Refuse to resume a checkpoint of another architecture, listing the differing fields and shapes."""
    saved, current = state.get("arch", {}), model.arch()
    diffs = [f"{k}: checkpoint {saved.get(k)} vs config {v}" for k, v in current.items() if saved.get(k) != v]
    for part in ("encoder", "predictor"):
        mine = getattr(model, part).state_dict()
        theirs = state.get(part, {})
        for k in sorted(set(mine) | set(theirs)):
            a, b = theirs.get(k), mine.get(k)
            if a is None or b is None or tuple(a.shape) != tuple(b.shape):
                diffs.append(f"{part}.{k}: checkpoint {_shape(a)} vs config {_shape(b)}")
    if diffs:
        shown = diffs[:8] + ([f"... {len(diffs) - 8} more"] if len(diffs) > 8 else [])
        raise CheckpointError(f"checkpoint {path} is of another architecture ({'; '.join(shown)}); "
                              f"resume with the config it was trained with or use a new logging.folder")


def _shape(t: torch.Tensor | None) -> str:
    return "absent" if t is None else str(tuple(t.shape))


def _write_failed(error: OSError, what: str, last_ckpt: Path | None) -> CheckpointWriteError:
    """The error that stops a run whose checkpoint could not be written, naming the last good one."""
    where = (f"the last good checkpoint is {last_ckpt} (continue with --resume)" if last_ckpt
             else "no checkpoint was written yet")
    return CheckpointWriteError(f"could not write {what} ({error}); the run stopped and {where}. "
                                f"Free disk space or choose another logging.folder")


class _SkipCounter:
    """Steps skipped by optimization.on_nonfinite=skip: counted, logged at each log flush, and capped."""

    def __init__(self, enabled: bool, total: int = 0) -> None:
        self.enabled, self.total, self.in_a_row = enabled, total, 0
        self._finite: list[torch.Tensor] = []  # one device flag per step since the last drain

    def record(self, finite: torch.Tensor) -> None:
        self._finite.append(finite)

    def drain(self, last_step: int, last_ckpt: Path | None) -> None:
        if not self._finite:
            return
        flags = torch.stack(self._finite).tolist()
        self._finite = []
        first = last_step - len(flags) + 1
        skipped = [first + i for i, ok in enumerate(flags) if not ok]
        for ok in flags:
            self.in_a_row = 0 if ok else self.in_a_row + 1
        if skipped:
            self.total += len(skipped)
            logger.warning("skipped step(s) %s: non-finite loss or gradients, parameters left unchanged "
                           "(%d skipped so far)", ", ".join(map(str, skipped)), self.total)
        if self.in_a_row >= MAX_CONSECUTIVE_SKIPS:
            where = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
            raise NonFiniteLossError(
                f"{self.in_a_row} steps in a row up to step {last_step} had a non-finite loss and were "
                f"skipped; stopped ({where}). Lower optimization.lr or set optimization.grad_clip")


def _check_finite(bad_step: torch.Tensor, last_ckpt: Path | None) -> None:
    bad = int(bad_step)
    if bad >= 0:
        where = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
        raise NonFiniteLossError(
            f"loss became non-finite at step {bad}; stopped ({where}). Lower optimization.lr, set "
            f"optimization.grad_clip, or set optimization.on_nonfinite=skip to skip such steps")


def _spikes(losses: list[float], history: list[float], first_step: int) -> None:
    """Warn when a loss exceeds 3x the median of the last 200 (needs 20 of history); names the step."""
    finite = [i for i, x in enumerate(losses) if math.isfinite(x)]
    if len(history) < 20 or not finite:
        return
    ref = statistics.median(history[-200:])
    i = max(finite, key=losses.__getitem__)
    if losses[i] > 3 * ref:
        logger.warning("loss spike at step %d: %.4g (3x above the recent median %.4g); if spikes recur, "
                       "lower optimization.lr or set optimization.grad_clip", first_step + i, losses[i], ref)


@torch.no_grad()
def _watch_collapse(model: IJEPA, imgs: torch.Tensor, run_log: RunLogger, step: int, record: bool = True) -> None:
    stats = collapse_stats(model.target_encoder(imgs))
    if not record:
        return
    run_log.add_metrics(step, **stats)
    warning = collapse_warning(stats, model.encoder.embed_dim)
    if warning:
        logger.warning("step %d: %s", step, warning)


def _write_reference_checkpoint(nets: dict, cfg: Config, epoch: int, epoch_losses: list[float],
                                env: DistEnv) -> None:
    """`{write_tag}-latest.pth.tar` in the reference's format, next to our own checkpoint."""
    from ..interop.reference import to_reference_checkpoint

    loss = statistics.fmean(epoch_losses) if epoch_losses else float("nan")
    ref = to_reference_checkpoint(nets, epoch=epoch, loss=loss, batch_size=cfg.data.batch_size,
                                  world_size=env.world_size, lr=cfg.optimization.lr,
                                  opt=nets["optimizer"], scaler=None)
    atomic_save(ref, Path(cfg.logging.folder) / f"{cfg.logging.write_tag}-latest.pth.tar")
