"""Learning-rate, weight-decay, EMA-momentum and regulariser schedules as pure functions of the step.

`step` is 1-based: the value used by the step-th optimizer step, which is what the reference's
schedulers return on their step-th `.step()` call. A resumed run therefore restores only the step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def warmup_cosine_lr(
    step: int, warmup_steps: int, total_steps: int, start_lr: float, ref_lr: float, final_lr: float
) -> float:
    """Linear warmup start_lr -> ref_lr, then cosine to final_lr (the reference's WarmupCosineSchedule)."""
    if step < warmup_steps:
        return start_lr + (step / warmup_steps) * (ref_lr - start_lr)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(final_lr, final_lr + (ref_lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def cosine_weight_decay(step: int, total_steps: int, ref_wd: float, final_wd: float) -> float:
    """Half-cosine from ref_wd to final_wd, clamped at final_wd (the reference's CosineWDSchedule)."""
    progress = step / total_steps
    wd = final_wd + (ref_wd - final_wd) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return max(final_wd, wd) if final_wd <= ref_wd else min(final_wd, wd)


def ema_momentum(step: int, total_steps: int, start: float, end: float) -> float:
    """Linear momentum ramp: step 1 uses `start`, step total_steps+1 reaches `end` (then held)."""
    i = min(step - 1, total_steps)
    return start + i * (end - start) / total_steps


@dataclass(frozen=True)
class Schedule:
    """The three I-JEPA schedules, built from the reference's epoch-based settings."""

    iterations_per_epoch: int
    epochs: int
    warmup_epochs: float = 40
    start_lr: float = 2e-4
    ref_lr: float = 1e-3
    final_lr: float = 1e-6
    weight_decay: float = 0.04
    final_weight_decay: float = 0.4
    ema: tuple[float, float] = (0.996, 1.0)
    ipe_scale: float = 1.0
    # Not in the reference: the anti-collapse terms' weights are scaled by a half-cosine from 1 to
    # this (weight decay's shape), so a run can lean on them early and drop them late (1.0: constant).
    reg_final_scale: float = 1.0

    @property
    def warmup_steps(self) -> int:
        """Warmup length in optimizer steps."""
        return int(self.warmup_epochs * self.iterations_per_epoch)

    @property
    def total_steps(self) -> int:
        """Schedule length in steps (stretched by ipe_scale, as the reference does)."""
        return int(self.ipe_scale * self.epochs * self.iterations_per_epoch)

    def lr(self, step: int) -> float:
        """Learning rate of the step-th (1-based) optimizer step."""
        return warmup_cosine_lr(step, self.warmup_steps, self.total_steps, self.start_lr, self.ref_lr, self.final_lr)

    def wd(self, step: int) -> float:
        """Weight decay of the step-th (1-based) optimizer step."""
        return cosine_weight_decay(step, self.total_steps, self.weight_decay, self.final_weight_decay)

    def momentum(self, step: int) -> float:
        """EMA momentum used after the step-th (1-based) optimizer step."""
        # The reference's momentum generator has ipe*epochs*ipe_scale as its denominator even
        # though the lr/wd length truncates with int(); keep that exact expression.
        denom = self.iterations_per_epoch * self.epochs * self.ipe_scale
        i = min(step - 1, int(denom))
        return self.ema[0] + i * (self.ema[1] - self.ema[0]) / denom

    def reg_scale(self, step: int) -> float:
        """Multiplier on the variance / covariance / SIGReg weights for the step-th (1-based) step."""
        if self.reg_final_scale == 1.0:
            return 1.0
        # held at the final value past the end (ipe_scale < 1), where weight decay's cosine turns back
        return cosine_weight_decay(min(step, self.total_steps), self.total_steps, 1.0, self.reg_final_scale)

    def at(self, step: int) -> tuple[float, float, float]:
        """(lr, weight decay, momentum) for the step-th (1-based) step."""
        return self.lr(step), self.wd(step), self.momentum(step)
