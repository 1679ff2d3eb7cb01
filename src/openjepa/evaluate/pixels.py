"""The raw pixels of an evaluation dataset, flattened: the input of the raw-pixel baseline (see runner.py)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

__all__ = ["flat_pixels"]


def _array_source(ds: Dataset) -> tuple[np.ndarray, np.ndarray] | None:
    """(uint8 images (N, H, W, C), int64 labels (N,)) of an array-backed dataset, without decoding
    through PIL; None when the dataset is not array-backed (image folders)."""
    if isinstance(ds, Subset):
        inner = _array_source(ds.dataset)
        if inner is None:
            return None
        idx = np.asarray(list(ds.indices), dtype=np.int64)
        return inner[0][idx], inner[1][idx]
    images = getattr(ds, "images", None)
    targets = getattr(ds, "targets", None)
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or targets is None:
        return None
    index = getattr(ds, "_index", None)  # NpzImageDataset(indices=...) keeps all images plus an index
    if index is not None:
        images = images[index]
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    if len(images) != len(targets):
        return None
    return images, targets


def flat_pixels(ds: Dataset) -> tuple[np.ndarray, torch.Tensor]:
    """Flattened pixels (N, H*W*C) and labels. Arrays are used as stored (uint8 values at their own
    resolution, as the data README's baseline did); other datasets go through their eval transform."""
    arrays = _array_source(ds)
    if arrays is not None:
        images, labels = arrays
        return images.reshape(len(images), -1), torch.from_numpy(labels)
    xs, ys = [], []
    for i in range(len(ds)):  # type: ignore[arg-type]
        x, y = ds[i]
        xs.append(torch.as_tensor(x, dtype=torch.float32).reshape(-1).numpy())
        ys.append(int(y))
    return np.stack(xs), torch.tensor(ys, dtype=torch.int64)
