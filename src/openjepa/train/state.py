"""The pretraining loop's data: what `fit` builds before the loop (`Run`), what the loop changes as it
goes (`LoopState`), and what it returns (`FitResult`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import Config
from ..core.distributed import DistEnv
from ..data.seeded import SeededTransformDataset
from ..data.shards import ShardDataset
from ..masks.multiblock import MultiBlockMaskCollator
from ..models.ijepa import IJEPA
from .guards import SkipCounter
from .monitor import DataWait, RunLogger
from .schedules import Schedule


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
    imgs_per_s: float = 0.0  # images per second over the whole loop (all ranks)
    data_wait_share: float = 0.0  # share of the loop's time this process waited for its loader


@dataclass
class Run:
    """Everything the loop uses and never replaces: config, process, data, networks, optimizer, logs."""

    cfg: Config
    env: DistEnv
    folder: Path
    train_set: SeededTransformDataset | ShardDataset
    collator: MultiBlockMaskCollator
    schedule: Schedule
    ipe: int  # optimizer steps per epoch
    total_steps: int  # ipe x epochs, or optimization.max_steps if fewer
    model: IJEPA  # the unwrapped networks (checkpoints, EMA, monitors)
    net: nn.Module  # what the step calls: DDP(model), compiled, or the model itself
    optimizer: torch.optim.Optimizer
    ema_fn: Callable
    sharded: bool  # FSDP2: every rank joins the gathers of checkpoints and monitors
    amp_dtype: torch.dtype | None
    run_log: RunLogger
    bar: tqdm
    on_epoch_end: Callable[[IJEPA, int], dict[str, float]] | None
    t0: float  # when fit started (optimization.max_minutes counts from here)
    scaler: torch.amp.GradScaler | None = None  # fp16 loss scaling (meta.precision=fp16)

    @property
    def batches_per_epoch(self) -> int:
        """Loader batches an epoch trains on: the steps' worth, leftovers that cannot fill one excluded."""
        return self.ipe * self.cfg.optimization.accum_steps

    @property
    def full_steps(self) -> int:
        """Steps of the whole schedule; a run stopped by max_steps before these reports "max_steps"."""
        return self.ipe * self.cfg.optimization.epochs


@dataclass
class LoopState:
    """Where the loop stands; a checkpoint holds it, so resuming one continues bit-exactly."""

    bad_step: torch.Tensor  # () long on the device: the first non-finite step, -1 for none (read without a sync)
    skips: SkipCounter
    step: int = 0  # optimizer steps done
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # loader batches of the current epoch trained on
    last_ckpt: Path | None = None  # last written or resumed from (not the newest file: that may be corrupt)
    saved_step: int | None = None  # the step `last_ckpt` holds
    recent: list[float] = field(default_factory=list)  # finite losses so far (spike reference, last loss)
    epoch_losses: list[float] = field(default_factory=list)  # finite losses of the current epoch
    stop_reason: str | None = None  # None while running; set where the loop stops
    t_step: float = field(default_factory=time.perf_counter)  # when the previous step ended
    clock_offset: float = 0.0  # seconds trained by the processes before this one (a resumed run)
    data_wait: DataWait = field(default_factory=DataWait)  # time blocked in next(loader) (not checkpointed)

    @property
    def last_loss(self) -> float:
        """The newest finite loss, NaN before the first."""
        return self.recent[-1] if self.recent else float("nan")
