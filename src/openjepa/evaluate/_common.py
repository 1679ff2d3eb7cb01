"""Small shared helpers for the evaluation probes (label encoding, splits, tensor coercion)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def as_tensor(x: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Return `x` as a tensor, without a copy when it already is one of the right dtype."""
    if isinstance(x, torch.Tensor):
        return x if dtype is None else x.to(dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype)


def as_numpy(x: Any) -> np.ndarray:
    """Return `x` as a numpy array (float16 features are widened: sklearn rejects half precision)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        return x.numpy()
    arr = np.asarray(x)
    return arr.astype(np.float32) if arr.dtype == np.float16 else arr


def encode_labels(train_y: Any, test_y: Any | None = None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Map labels to 0..C-1 by the sorted unique train labels; unseen test labels become -1.

    Labels need not be contiguous (Clevr counts are 3..10), so probes work on these indices.
    Returns (train_idx, test_idx or None, classes).
    """
    train_y = as_tensor(train_y).reshape(-1)
    classes = torch.unique(train_y)  # sorted
    train_idx = torch.searchsorted(classes, train_y)
    test_idx = None
    if test_y is not None:
        test_y = as_tensor(test_y).reshape(-1).to(classes.dtype)
        pos = torch.searchsorted(classes, test_y).clamp_(max=len(classes) - 1)
        # A test label the probe never saw can never be predicted: mark it so it always counts wrong.
        test_idx = torch.where(classes[pos] == test_y, pos, torch.full_like(pos, -1))
    return train_idx.long(), (None if test_idx is None else test_idx.long()), classes


def stratified_split(labels: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded per-class split of indices into (fit, val); every class keeps >= 1 fitting example.

    Each class with n >= 2 examples puts round(val_fraction * n) of them (at least 1) in val, so the
    validation set has the train class proportions.
    """
    labels = as_tensor(labels).reshape(-1)
    gen = torch.Generator().manual_seed(int(seed))
    fit, val = [], []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).reshape(-1)
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_val = 0
        if val_fraction > 0 and len(idx) >= 2:
            n_val = min(max(1, int(round(val_fraction * len(idx)))), len(idx) - 1)
        val.append(idx[:n_val])
        fit.append(idx[n_val:])
    return torch.cat(fit).sort().values, torch.cat(val).sort().values
