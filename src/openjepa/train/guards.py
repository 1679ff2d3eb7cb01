"""What stops or warns a pretraining run: stop signals, non-finite losses, skipped steps, loss spikes,
representation collapse and failed checkpoint writes."""

from __future__ import annotations

import logging
import math
import signal
import statistics
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Callable

import torch

from ..core.checkpoint import CheckpointWriteError
from ..data.loader import STOP_SIGNALS  # SIGTERM, SIGUSR1: loader workers ignore them, the loop handles them
from ..models.ijepa import IJEPA
from .monitor import RunLogger, collapse_stats, collapse_warning

logger = logging.getLogger("openjepa.train")
MAX_CONSECUTIVE_SKIPS = 50  # on_nonfinite=skip stops the run after this many non-finite steps in a row
# What signal.signal installs and returns (typeshed's private signal._HANDLER).
_SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite and the run was stopped."""


class StopSignals:
    """While active (in the main thread), SIGTERM and SIGUSR1 set `received` instead of killing.

    The loop checks it after each step (with several ranks, at each log step, all ranks agreeing),
    then checkpoints and stops. A second signal of the same kind acts as it did before (by default
    it terminates), so a stuck run can still be stopped.
    """

    def __init__(self, names: tuple[str, ...] = STOP_SIGNALS) -> None:
        self.names = names
        self.received: int | None = None
        self._previous: dict[int, _SignalHandler] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for name in self.names:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        previous = self._previous.get(signum)
        signal.signal(signum, previous if previous is not None else signal.SIG_DFL)

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()


def _last_good(last_ckpt: Path | None, hint: str = "") -> str:
    """The clause naming where a stopped run can continue from, for the error messages below."""
    return f"the last good checkpoint is {last_ckpt}{hint}" if last_ckpt else "no checkpoint was written yet"


class SkipCounter:
    """Steps skipped by optimization.on_nonfinite=skip: counted, logged at each log flush, and capped."""

    def __init__(self, enabled: bool, total: int = 0) -> None:
        self.enabled, self.total, self.in_a_row = enabled, total, 0
        self._finite: list[torch.Tensor] = []  # one device flag per step since the last drain

    def record(self, finite: torch.Tensor) -> None:
        """Keep one step's finiteness flag on the device (read at the next drain)."""
        self._finite.append(finite)

    def drain(self, last_step: int, last_ckpt: Path | None) -> None:
        """Read the flags of the steps up to `last_step`, log the skipped ones, and stop after too many in a row."""
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
            logger.warning(
                "skipped step(s) %s: non-finite loss or gradients, parameters left unchanged (%d skipped so far)",
                ", ".join(map(str, skipped)),
                self.total,
            )
        if self.in_a_row >= MAX_CONSECUTIVE_SKIPS:
            raise NonFiniteLossError(
                f"{self.in_a_row} steps in a row up to step {last_step} had a non-finite loss and were "
                f"skipped; stopped ({_last_good(last_ckpt)}). Lower optimization.lr or set optimization.grad_clip"
            )


def check_finite(bad_step: torch.Tensor, last_ckpt: Path | None) -> None:
    """Stop the run if `bad_step` (the first non-finite step, -1 for none; a host sync) is set."""
    bad = int(bad_step)
    if bad >= 0:
        raise NonFiniteLossError(
            f"loss became non-finite at step {bad}; stopped ({_last_good(last_ckpt)}). Lower optimization.lr, set "
            f"optimization.grad_clip, or set optimization.on_nonfinite=skip to skip such steps"
        )


def warn_spikes(losses: list[float], history: list[float], first_step: int) -> None:
    """Warn when a loss exceeds 3x the median of the last 200 (needs 20 of history); names the step."""
    finite = [i for i, x in enumerate(losses) if math.isfinite(x)]
    if len(history) < 20 or not finite:
        return
    ref = statistics.median(history[-200:])
    i = max(finite, key=losses.__getitem__)
    if losses[i] > 3 * ref:
        logger.warning(
            "loss spike at step %d: %.4g (3x above the recent median %.4g); if spikes recur, "
            "lower optimization.lr or set optimization.grad_clip",
            first_step + i,
            losses[i],
            ref,
        )


@torch.no_grad()
def watch_collapse(model: IJEPA, imgs: torch.Tensor, run_log: RunLogger, step: int, record: bool = True) -> None:
    """Log the target encoder's collapse indicators on `imgs` (B, 3, H, W) and warn if they look collapsed."""
    stats = collapse_stats(model.target_encoder(imgs))
    if not record:
        return
    run_log.add_metrics(step, **stats)
    warning = collapse_warning(stats, model.encoder.embed_dim)
    if warning:
        logger.warning("step %d: %s", step, warning)


def write_failed(error: OSError, what: str, last_ckpt: Path | None) -> CheckpointWriteError:
    """The error that stops a run whose checkpoint could not be written, naming the last good one."""
    return CheckpointWriteError(
        f"could not write {what} ({error}); the run stopped and "
        f"{_last_good(last_ckpt, ' (continue with --resume)')}. "
        f"Free disk space or choose another logging.folder"
    )
