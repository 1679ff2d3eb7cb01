"""Exponential moving average of the context encoder into the target encoder."""

from __future__ import annotations

import torch
import torch.nn as nn


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- m * target + (1 - m) * online, for every parameter, with foreach kernels."""
    t_params = [p.data for p in target.parameters()]
    o_params = [p.data for p in online.parameters()]
    if len(t_params) != len(o_params):
        raise ValueError("target and online encoders have different parameter lists")
    # Same three roundings as the reference's per-tensor mul_(m).add_((1-m) * q), so results match
    # bitwise (add_(q, alpha=1-m) fuses the multiply-add and can differ in the last bit).
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, torch._foreach_mul(o_params, 1.0 - momentum))


@torch.no_grad()
def ema_update_per_tensor_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """The reference's per-tensor loop (one mul_ and one add_ per parameter): the eager baseline."""
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.data.mul_(momentum).add_((1.0 - momentum) * o.detach().data)
