"""Per-sample seeded augmentation, so a resumed run sees exactly the crops an uninterrupted one would."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from ..masks.multiblock import derive_seed


class SeededTransformDataset(Dataset):
    """Apply `transform` to `base[i]` with torch's RNG seeded from (seed, epoch, i).

    The crop of sample i in epoch e no longer depends on which worker loads it or on what was
    loaded before, which is what makes mid-epoch resume bit-exact.
    """

    def __init__(self, base: Dataset, transform: Callable[[Any], torch.Tensor], seed: int = 0) -> None:
        self.base, self.transform, self.seed, self.epoch = base, transform, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentations to draw (call before building the epoch's loader)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img, label = self.base[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, self.epoch, index))
            return self.transform(img), label
