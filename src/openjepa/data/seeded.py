"""Per-sample seeded augmentation, so a resumed run sees exactly the crops an uninterrupted one would."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from ..core.seeding import derive_seed
from .fast_decode import FusedCrop


class SeededTransformDataset(Dataset):
    """Apply `transform` to `base[i]` with torch's RNG seeded from (seed, epoch, i).

    The crop of sample i in epoch e no longer depends on which worker loads it or on what was
    loaded before, which is what makes mid-epoch resume bit-exact.

    With `fast_decode` (data.fast_decode), a base that hands out its encoded images (`load(i, read)`:
    image folders, .npz arrays) has them decoded together with the crop (data/fast_decode.py): the
    same boxes and flips, pixels equal up to the resampling, faster (docs/performance.md).
    """

    def __init__(
        self, base: Dataset, transform: Callable[[Any], torch.Tensor], seed: int = 0, fast_decode: bool = True
    ) -> None:
        self.base, self.transform, self.seed, self.epoch = base, transform, seed, 0
        self.fused = FusedCrop.of(transform) if fast_decode and callable(getattr(base, "load", None)) else None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentations to draw (call before building the epoch's loader)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def _seeded(self, index: int) -> Iterator[None]:
        """torch's CPU RNG seeded for sample `index` of this epoch, the caller's state restored after."""
        with torch.random.fork_rng(devices=[]):
            # the CPU generator alone (what the transforms draw from): torch.manual_seed would also queue
            # seeds for CUDA, MPS, XPU and MTIA, each with a formatted stack, ~0.1 ms a sample
            torch.random.default_generator.manual_seed(derive_seed(self.seed, self.epoch, index))
            yield

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self.fused is not None:
            with self._seeded(index):
                pixels, label = self.base.load(index, self.fused.crop)  # type: ignore[attr-defined]
                return self.fused.finish(pixels), label
        img, label = self.base[index]
        with self._seeded(index):
            return self.transform(img), label
