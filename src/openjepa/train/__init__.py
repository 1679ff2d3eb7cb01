"""Training: schedules, optimizer groups, EMA, the train step and the pretraining loop."""

from .ema import ema_update_
from .optim import make_optimizer, param_groups, set_lr_wd
from .schedules import Schedule, cosine_weight_decay, ema_momentum, warmup_cosine_lr
from .step import StepResult, autocast_context, train_step, unwrap

__all__ = [
    "Schedule",
    "warmup_cosine_lr",
    "cosine_weight_decay",
    "ema_momentum",
    "make_optimizer",
    "param_groups",
    "set_lr_wd",
    "ema_update_",
    "train_step",
    "StepResult",
    "autocast_context",
    "unwrap",
]
