"""Random-patch masking (the reference's unused `random.py` collator), for the masking ablation."""

from __future__ import annotations

from typing import Sequence

import torch

from .multiblock import MultiBlockMaskCollator, _pair


class RandomMaskCollator(MultiBlockMaskCollator):
    """Per batch a ratio r ~ U(ratio); per image a random permutation: context = first N(1-r), target = rest.

    Shares the multi-block collator's collation and per-(seed, epoch, batch) seeding; only `sample` differs.
    """

    def __init__(
        self,
        input_size: int | Sequence[int] = (224, 224),
        patch_size: int = 16,
        ratio: Sequence[float] = (0.4, 0.6),
        *,
        seed: int = 0,
    ) -> None:
        ih, iw = _pair(input_size)
        self.height, self.width = ih // patch_size, iw // patch_size
        self.patch_size = patch_size
        self.ratio = tuple(ratio)
        self.nenc = self.npred = 1
        self.seed, self.epoch, self.start_batch, self._calls = seed, 0, 0, 0

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """One context and one target mask per image, both in ascending raster order."""
        n = self.height * self.width
        r = self.ratio[0] + torch.rand(1, generator=generator).item() * (self.ratio[1] - self.ratio[0])
        n_ctx = int(n * (1 - r))
        perm = torch.rand(batch_size, n, generator=generator).argsort(dim=1)
        ctx = perm[:, :n_ctx].sort(dim=1).values
        tgt = perm[:, n_ctx:].sort(dim=1).values
        return [ctx], [tgt]
