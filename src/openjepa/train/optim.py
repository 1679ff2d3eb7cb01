"""AdamW with the reference's four parameter groups (no weight decay on biases and 1-D tensors)."""

from __future__ import annotations

import torch
import torch.nn as nn


def _decays(name: str, p: torch.Tensor) -> bool:
    return "bias" not in name and p.ndim != 1


def param_groups(encoder: nn.Module, predictor: nn.Module) -> list[dict]:
    """[encoder decay, predictor decay, encoder no-decay, predictor no-decay], as the reference orders them.

    Frozen position tables stay in the decay groups (they get no gradient, so AdamW skips them),
    which keeps parameter indices identical to the reference's optimizer state dicts.
    """
    enc = list(encoder.named_parameters())
    pred = list(predictor.named_parameters())
    return [
        {"params": [p for n, p in enc if _decays(n, p)]},
        {"params": [p for n, p in pred if _decays(n, p)]},
        {"params": [p for n, p in enc if not _decays(n, p)], "WD_exclude": True, "weight_decay": 0.0},
        {"params": [p for n, p in pred if not _decays(n, p)], "WD_exclude": True, "weight_decay": 0.0},
    ]


def make_optimizer(
    encoder: nn.Module,
    predictor: nn.Module,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    fused: bool | None = None,
    foreach: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW over the reference's groups; `fused`/`foreach` pick torch's fast implementations."""
    kwargs = {}
    if fused:
        kwargs["fused"] = True
    elif foreach is not None:
        kwargs["foreach"] = foreach
    return torch.optim.AdamW(param_groups(encoder, predictor), betas=betas, eps=eps, **kwargs)


def set_lr_wd(optimizer: torch.optim.Optimizer, lr: float, wd: float) -> None:
    """Set one lr for every group and the weight decay of the groups that decay."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        if not group.get("WD_exclude", False):
            group["weight_decay"] = wd
