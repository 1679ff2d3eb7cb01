"""A pretraining run's checkpoints: resuming from the newest good one, writing one (and the reference-format
file), and the checks around both (same architecture, enough disk, a clear error when a write fails)."""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

import torch

from ..config import Config, config_to_dict
from ..core.checkpoint import (
    CheckpointError,
    atomic_save,
    checkpoint_path,
    find_resumable,
    list_checkpoints,
    save_checkpoint,
)
from ..core.distributed import DistEnv
from ..core.seeding import capture_rng, restore_rng
from ..models.ijepa import IJEPA
from .guards import write_failed
from .parallel import full_state_dicts
from .state import LoopState, Run

logger = logging.getLogger("openjepa.train")


class RunExistsError(FileExistsError):
    """The run folder already holds checkpoints and --resume was not given."""


def checkpoint_bytes(model: IJEPA) -> int:
    """Rough size of one checkpoint: three networks plus two AdamW moments, fp32."""
    n = sum(p.numel() for p in model.parameters())
    n_trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return 4 * (n + 2 * n_trained) + (1 << 20)


def load_resumable(cfg: Config, env: DistEnv, model: IJEPA, folder: Path, resume: bool) -> tuple[Path, dict] | None:
    """With `resume` (or meta.load_checkpoint), load the newest good checkpoint into `model` and the RNGs.

    Returns (its path, its state) or None; refuses to start over a folder that holds checkpoints.
    """
    found = find_resumable(folder, map_location=env.device) if (resume or cfg.meta.load_checkpoint) else None
    if found is not None:
        path, state = found
        check_arch(state, model, path)
        model.encoder.load_state_dict(state["encoder"])
        model.predictor.load_state_dict(state["predictor"])
        model.target_encoder.load_state_dict(state["target_encoder"])
        restore_rng(state["rng"])
        if env.is_main:
            logger.info(
                "resumed from %s (step %d, epoch %d, batch %d)",
                path,
                state["step"],
                state["epoch"] + 1,
                state["batch_in_epoch"],
            )
    elif list_checkpoints(folder):
        raise RunExistsError(
            f"{folder} already holds checkpoints (newest step "
            f"{list_checkpoints(folder)[-1][0]}); pass --resume to continue that run, "
            f"or set logging.folder to a new folder"
        )
    elif resume and env.is_main:
        logger.info("--resume: no checkpoint in %s yet, starting at step 0", folder)
    return found


def check_arch(state: dict, model: IJEPA, path: Path) -> None:
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
        raise CheckpointError(
            f"checkpoint {path} is of another architecture ({'; '.join(shown)}); "
            f"resume with the config it was trained with or use a new logging.folder"
        )


def _shape(t: torch.Tensor | None) -> str:
    return "absent" if t is None else str(tuple(t.shape))


def write_run_checkpoint(run: Run, st: LoopState, reason: str, reference: bool = False) -> Path:
    """Checkpoint the loop where it stands (rank 0 writes; with FSDP every rank joins the gather).

    Returns the checkpoint's path on every rank; `reference` also writes `{write_tag}-latest.pth.tar`.
    """
    nets = full_state_dicts(run.model, run.optimizer, run.env)
    if not run.env.is_main:
        return checkpoint_path(run.folder, st.step)
    assert nets is not None  # full_state_dicts returns None on the other ranks only
    state = {
        "config": config_to_dict(run.cfg),
        "arch": run.model.arch(),
        "encoder": nets["encoder"],
        "predictor": nets["predictor"],
        "target_encoder": nets["target_encoder"],
        "optimizer": nets["optimizer"],
        "step": st.step,
        "epoch": st.epoch,
        "batch_in_epoch": st.batch_in_epoch,
        "rng": capture_rng(),
        "reason": reason,
        "loss": st.last_loss,
        "skipped_steps": st.skips.total,
        "train_seconds": st.clock_offset + time.perf_counter() - run.t0,
    }
    try:
        path = save_checkpoint(
            state, run.folder, st.step, keep_last=run.cfg.logging.keep_last, min_free_bytes=checkpoint_bytes(run.model)
        )
    except OSError as e:
        raise write_failed(e, f"the step {st.step} checkpoint", st.last_ckpt) from e
    if reference:
        try:
            _write_reference_checkpoint(nets, run.cfg, st.epoch, st.epoch_losses, run.env)
        except OSError as e:
            raise write_failed(e, "the reference-format checkpoint", path) from e
    return path


def _write_reference_checkpoint(nets: dict, cfg: Config, epoch: int, epoch_losses: list[float], env: DistEnv) -> None:
    """`{write_tag}-latest.pth.tar` in the reference's format, next to our own checkpoint."""
    from ..interop.reference import to_reference_checkpoint

    loss = statistics.fmean(epoch_losses) if epoch_losses else float("nan")
    ref = to_reference_checkpoint(
        nets,
        epoch=epoch,
        loss=loss,
        batch_size=cfg.data.batch_size,
        world_size=env.world_size,
        lr=cfg.optimization.lr,
        opt=nets["optimizer"],
        scaler=None,
    )
    atomic_save(ref, Path(cfg.logging.folder) / f"{cfg.logging.write_tag}-latest.pth.tar")
