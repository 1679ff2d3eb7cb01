"""The pretraining loop: `fit(cfg)` reads top to bottom; every piece it calls is tested on its own."""

from __future__ import annotations

import logging
import math
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..config import Config, config_to_dict, save_config
from ..data import build_dataset, make_loader, make_pretrain_transforms
from ..data.seeded import SeededTransformDataset
from ..distributed import DistEnv, all_reduce_mean, barrier, init_distributed
from ..masks import MultiBlockMaskCollator, RandomMaskCollator
from ..models.ijepa import IJEPA
from .checkpoint import (CheckpointError, CheckpointWriteError, atomic_save, check_free_space, find_resumable,
                         list_checkpoints, remove_partial_writes, save_checkpoint)
from .monitor import RunLogger, collapse_stats, collapse_warning
from .optim import make_optimizer
from .schedules import Schedule
from .step import train_step, unwrap

logger = logging.getLogger("openjepa.train")
MAX_CONSECUTIVE_SKIPS = 50  # on_nonfinite=skip stops the run after this many non-finite steps in a row


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


# --------------------------------------------------------------------------- building blocks
def build_train_dataset(cfg: Config) -> SeededTransformDataset:
    """The training images with the reference's augmentations, seeded per sample."""
    d = cfg.data
    spec = d.dataset or f"folder:{os.path.join(d.root_path, d.image_folder)}"
    kwargs: dict = {}
    if spec.lower().startswith(("shapes", "demo")):
        kwargs["img_size"] = d.crop_size
    elif d.subset_file and not spec.lower().endswith(".npz"):
        kwargs["subset_file"] = d.subset_file
    base = build_dataset(spec, split="train", **kwargs)
    if len(base) == 0:
        raise ValueError(f"dataset {spec!r} is empty; point data.dataset or data.root_path at images")
    transform = make_pretrain_transforms(d.crop_size, tuple(d.crop_scale), d.use_horizontal_flip,
                                         d.use_color_distortion, d.use_gaussian_blur, d.color_jitter_strength)
    return SeededTransformDataset(base, transform, seed=cfg.meta.seed)


def build_collator(cfg: Config) -> MultiBlockMaskCollator:
    """The mask collator named by mask.strategy ('block' is multi-block with one big target)."""
    m, seed = cfg.mask, cfg.meta.seed
    if m.strategy == "random":
        return RandomMaskCollator(cfg.data.crop_size, m.patch_size, seed=seed)
    return MultiBlockMaskCollator(
        cfg.data.crop_size, m.patch_size, m.enc_mask_scale, m.pred_mask_scale, m.aspect_ratio,
        m.num_enc_masks, m.num_pred_masks, m.min_keep, m.allow_overlap, seed=seed,
        independent_scale_aspect=m.independent_scale_aspect, include_last_row_col=m.include_last_row_col,
        allow_full_size_blocks=m.allow_full_size_blocks, truncate=m.truncate)


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
    """Pretrain I-JEPA as configured; with `resume`, continue bit-exactly from the newest good checkpoint."""
    env = env or init_distributed(cfg.meta.device)
    device, folder = env.device, Path(cfg.logging.folder)
    opt_cfg, log_cfg = cfg.optimization, cfg.logging
    t0 = time.perf_counter()

    train_set = build_train_dataset(cfg)
    collator = build_collator(cfg)
    batches_per_epoch = len(train_set) // (cfg.data.batch_size * env.world_size)
    ipe = batches_per_epoch // opt_cfg.accum_steps
    if ipe < 1:
        raise ValueError(f"{len(train_set)} images are too few for one step of batch {cfg.data.batch_size} "
                         f"x {env.world_size} ranks x {opt_cfg.accum_steps} accumulation; lower data.batch_size")
    schedule = Schedule(ipe, opt_cfg.epochs, opt_cfg.warmup, opt_cfg.start_lr, opt_cfg.lr, opt_cfg.final_lr,
                        opt_cfg.weight_decay, opt_cfg.final_weight_decay, tuple(opt_cfg.ema), opt_cfg.ipe_scale)
    total_steps = ipe * opt_cfg.epochs
    if opt_cfg.max_steps is not None:
        total_steps = min(total_steps, opt_cfg.max_steps)

    model = build_model(cfg).to(device)
    optimizer = make_optimizer(model.encoder, model.predictor, tuple(opt_cfg.betas), opt_cfg.eps,
                               fused=device.type == "cuda")
    step, epoch, batch_in_epoch = 0, 0, 0
    found = find_resumable(folder, map_location=device) if (resume or cfg.meta.load_checkpoint) else None
    if found is not None:
        path, state = found
        _check_arch(state, model, path)
        model.encoder.load_state_dict(state["encoder"])
        model.predictor.load_state_dict(state["predictor"])
        model.target_encoder.load_state_dict(state["target_encoder"])
        optimizer.load_state_dict(state["optimizer"])
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
    net: torch.nn.Module = model
    if env.distributed:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
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

    def save(reason: str) -> Path | None:
        drain()  # never checkpoint a non-finite model, and log every step the checkpoint covers
        if not env.is_main:
            return None
        state = {"config": config_to_dict(cfg), "arch": model.arch(), "encoder": model.encoder.state_dict(),
                 "predictor": model.predictor.state_dict(), "target_encoder": model.target_encoder.state_dict(),
                 "optimizer": optimizer.state_dict(), "step": step, "epoch": epoch,
                 "batch_in_epoch": batch_in_epoch, "rng": _capture_rng(), "reason": reason,
                 "loss": recent[-1] if recent else float("nan"), "skipped_steps": skips.total}
        try:
            return save_checkpoint(state, folder, step, keep_last=log_cfg.keep_last,
                                   min_free_bytes=checkpoint_bytes(model))
        except OSError as e:
            raise _write_failed(e, f"the step {step} checkpoint", last_ckpt) from e

    bad_step = torch.full((), -1, dtype=torch.long, device=device)  # first non-finite step, no sync
    skips = _SkipCounter(opt_cfg.on_nonfinite == "skip", state.get("skipped_steps", 0) if found else 0)
    recent: list[float] = []
    epoch_losses: list[float] = []
    last_ckpt: Path | None = found[0] if found else None  # not the newest file: that one may be corrupt
    stop_reason = "completed"
    t_step = time.perf_counter()
    try:
        while epoch < opt_cfg.epochs and step < total_steps:
            train_set.set_epoch(epoch)
            collator.set_epoch(epoch, start_batch=batch_in_epoch)
            loader = make_loader(train_set, cfg.data.batch_size, collator, seed=cfg.meta.seed, epoch=epoch,
                                 num_workers=cfg.data.num_workers, pin_memory=cfg.data.pin_mem and device.type == "cuda",
                                 rank=env.rank, world_size=env.world_size, skip_batches=batch_in_epoch)
            micro: list = []
            for (imgs, _), masks_enc, masks_pred in loader:
                micro.append((imgs.to(device, non_blocking=True), [m.to(device, non_blocking=True) for m in masks_enc],
                              [m.to(device, non_blocking=True) for m in masks_pred]))
                if len(micro) < opt_cfg.accum_steps:
                    continue
                if batch_in_epoch + len(micro) > ipe * opt_cfg.accum_steps:
                    break  # leftover batches that cannot fill an accumulation step
                step += 1
                lr, wd, momentum = schedule.at(step)
                result = train_step(net, optimizer, micro, lr, wd, momentum, amp_dtype=amp_dtype,
                                    grad_clip=opt_cfg.grad_clip, skip_nonfinite=opt_cfg.on_nonfinite == "skip")
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
                if log_cfg.collapse_every_steps and step % log_cfg.collapse_every_steps == 0 and env.is_main:
                    _watch_collapse(model, micro[0][0], run_log, step)
                micro = []
                bar.update(1)
                if step % log_cfg.log_freq == 0 or step == total_steps:
                    losses = drain()
                    if losses:
                        bar.set_postfix(loss=f"{statistics.fmean(losses):.4f}", lr=f"{lr:.2e}",
                                        img_s=f"{imgs_per_s:.0f}")
                if log_cfg.checkpoint_every_steps and step % log_cfg.checkpoint_every_steps == 0:
                    last_ckpt = save("interval") or last_ckpt
                if opt_cfg.max_minutes is not None and (time.perf_counter() - t0) > 60 * opt_cfg.max_minutes:
                    stop_reason = "max_minutes"
                    break
                if step >= total_steps:
                    break
            if stop_reason != "completed" or batch_in_epoch < ipe * opt_cfg.accum_steps:
                break  # stopped mid-epoch: the checkpoint below records where
            drain()
            epoch, batch_in_epoch = epoch + 1, 0
            last_ckpt = save("epoch") or last_ckpt
            if env.is_main:
                try:
                    _write_reference_checkpoint(model, optimizer, cfg, epoch, epoch_losses, env)
                except OSError as e:
                    raise _write_failed(e, "the reference-format checkpoint", last_ckpt) from e
            epoch_losses = []
            if on_epoch_end is not None and log_cfg.eval_every_epochs and epoch % log_cfg.eval_every_epochs == 0:
                if env.is_main:
                    run_log.add_metrics(step, **on_epoch_end(model, epoch))
                barrier(env)
        if step >= total_steps and stop_reason == "completed" and step < ipe * opt_cfg.epochs:
            stop_reason = "max_steps"
        drain()
        if stop_reason != "completed" or (last_ckpt is None or not last_ckpt.name.endswith(f"{step:08d}.pt")):
            last_ckpt = save(stop_reason) or last_ckpt
    finally:
        bar.close()
        run_log.close()
    skipped_images = getattr(train_set.base, "num_skipped", 0)
    if skipped_images and env.is_main:
        logger.warning("%d unreadable image file(s) were skipped (named in the warnings above)", skipped_images)
    return FitResult(folder, step, epoch, recent[-1] if recent else float("nan"), last_ckpt,
                     time.perf_counter() - t0, stop_reason, skips.total, skipped_images)


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
def _watch_collapse(model: IJEPA, imgs: torch.Tensor, run_log: RunLogger, step: int) -> None:
    stats = collapse_stats(model.target_encoder(imgs))
    run_log.add_metrics(step, **stats)
    warning = collapse_warning(stats, model.encoder.embed_dim)
    if warning:
        logger.warning("step %d: %s", step, warning)


def _write_reference_checkpoint(model: IJEPA, optimizer: torch.optim.Optimizer, cfg: Config, epoch: int,
                                epoch_losses: list[float], env: DistEnv) -> None:
    """`{write_tag}-latest.pth.tar` in the reference's format, next to our own checkpoint."""
    from ..interop.reference import to_reference_checkpoint

    loss = statistics.fmean(epoch_losses) if epoch_losses else float("nan")
    ref = to_reference_checkpoint(model, epoch=epoch, loss=loss, batch_size=cfg.data.batch_size,
                                  world_size=env.world_size, lr=cfg.optimization.lr,
                                  opt=optimizer.state_dict(), scaler=None)
    atomic_save(ref, Path(cfg.logging.folder) / f"{cfg.logging.write_tag}-latest.pth.tar")
