"""Random access to the samples of tar shards, for evaluation (pretraining streams them: shards.py)."""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from .shard_files import _decode, _iter_groups

__all__ = ["ShardSamples"]


class ShardSamples(Dataset):
    """`(transform(img), label)` of every sample of some tar shards, by index, in shard-list order.

    The tar headers are read once (no image bytes); an item then reads only its own members at
    their recorded offsets, so Subsets, samplers and `ds[i]` cost one read each, unlike
    `ShardDataset`, whose stream is sequential and seeded for training. Labels come from the
    `.cls` members (-1 where a sample has none).
    """

    def __init__(self, urls: Sequence[str], transform: Callable[[Image.Image], Any] | None = None) -> None:
        """Index the members of every shard in `urls`."""
        self.urls = [str(u) for u in urls]
        self.transform = transform
        # (shard, key, ((extension, data offset, size), ...)) per sample
        self._samples: list[tuple[int, str, tuple[tuple[str, int, int], ...]]] = []
        for shard, url in enumerate(self.urls):
            with tarfile.open(url, "r:") as tf:
                for key, group in _iter_groups(tf):
                    members = tuple((ext, int(m.offset_data), int(m.size)) for ext, m in group.items())
                    self._samples.append((shard, key, members))

    def __len__(self) -> int:
        """Number of samples over all shards."""
        return len(self._samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        """Read, decode and transform one sample."""
        shard, key, members = self._samples[index]
        path = self.urls[shard]
        data = {}
        with open(path, "rb") as f:
            for ext, offset, size in members:
                f.seek(offset)
                data[ext] = f.read(size)
        img, label = _decode(path, key, data)
        return (self.transform(img) if self.transform is not None else img), label

    def __repr__(self) -> str:
        """Short description with the number of shards and samples."""
        return f"{type(self).__name__}({len(self.urls)} shards, n={len(self)})"
