"""Tensor operations on patch-index masks, with the reference's batch layout."""

from __future__ import annotations

import torch


def apply_masks(x: torch.Tensor, masks: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """Gather kept tokens: x (B, N, D), masks [(B, K)] -> (len(masks) * B, K, D), mask-major."""
    if isinstance(masks, torch.Tensor):
        masks = [masks]
    out = [torch.gather(x, 1, m.unsqueeze(-1).expand(-1, -1, x.size(-1))) for m in masks]
    return torch.cat(out, dim=0)


def repeat_interleave_batch(x: torch.Tensor, batch_size: int, repeat: int) -> torch.Tensor:
    """Repeat each consecutive chunk of `batch_size` rows `repeat` times (the reference's helper)."""
    if repeat == 1:
        return x
    n = len(x) // batch_size
    chunks = x.reshape(n, batch_size, *x.shape[1:])
    return chunks.unsqueeze(1).expand(n, repeat, *chunks.shape[1:]).reshape(-1, *x.shape[1:])
