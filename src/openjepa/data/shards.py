"""Streaming WebDataset-style tar shards: shuffled, split across ranks and workers, resumable.

A shard is a plain tar file (`shard-000000.tar`) whose consecutive members sharing a key form one
sample: `00001234.jpg` (or any image suffix of data/images.py) and `00001234.cls` (the label as text).
This is the WebDataset layout, so shards written by the `webdataset` package's `TarWriter` or its
`tarp`/`wids` tools read here, and shards written by `write_shards` read there.

The reader is Python's `tarfile` under a torch `IterableDataset`, not the `webdataset` package:
a training run here must resume mid-epoch *bit-exactly* (same samples, same order, same crops), which
needs the sample order to be a pure function of (seed, epoch, rank, worker) that can be replayed
without reading images. Computing that order ourselves is a few lines; the read path stays
sequential (each worker reads its shards front to back, never seeking between samples).

Order of one epoch, for `world_size` ranks of `num_workers` loader workers and batch `B`:

1. the shards are permuted by `(seed, epoch)`; their samples, concatenated, form the epoch's stream;
2. rank r takes the contiguous slice `[r * S, (r + 1) * S)` of it, `S = B * (N // (world_size * B))`
   (every rank gets the same number of full batches; the < world_size * B samples left over wait
   for the next epoch's permutation, like `DistributedSampler(drop_last=True)`);
3. that slice is cut into one contiguous *lane* per worker, lane l holding the batches
   l, l + W, l + 2W, ... of the rank (W = max(1, num_workers)), which is the order a DataLoader
   asks its workers for batches;
4. each lane is shuffled by a buffer of `shuffle_buffer` samples seeded by (seed, epoch, rank, lane).

Resuming after `k` batches of the epoch: lane l has served the batches j < k with j = l (mod W);
its first `B x (that many)` samples are skipped without being decoded (shards wholly consumed are
not opened), and the loader worker i serves lane (k + i) mod W, so batch k + i comes next, as in
the uninterrupted run. The order depends on num_workers and the world size: resume with both equal.
"""

from __future__ import annotations

import tarfile
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from ..core.seeding import derive_seed
from .shard_files import (
    IMAGE_EXTS,
    INDEX_NAME,
    SHARDS_PREFIX,
    _decode,
    _iter_groups,
    count_samples,
    expand_urls,
    index_shards,
)
from .shard_writer import write_shards

# the reader's and writer's names are part of this module's API (docs/scaling.md): one import for shards
__all__ = [
    "SHARDS_PREFIX",
    "ShardDataset",
    "expand_urls",
    "write_shards",
    "count_samples",
    "index_shards",
    "buffer_shuffle_order",
    "IMAGE_EXTS",
]

_TAG_SHARDS, _TAG_LANE = 0x5A4D, 0x1A7E  # separate the seed streams of the shard permutation and the lanes


# --------------------------------------------------------------------------- orders
def _consumed(skip_batches: int, lane: int, lanes: int) -> int:
    """Batches j < skip_batches with j = lane (mod lanes): what lane `lane` served before a resume."""
    return (skip_batches - lane + lanes - 1) // lanes if skip_batches > lane else 0


def buffer_shuffle_order(n: int, buffer: int, rng: np.random.Generator) -> np.ndarray:
    """Output order of a shuffle buffer of `buffer` items over a stream of n items (as positions).

    The same law as WebDataset's `shuffle(buffer)`: fill the buffer, then repeatedly emit a random
    item from it and take in the next; at the end, emit what is left in random order. Output t
    comes from input position < t + buffer, so a sequential reader holds at most ~buffer items.
    """
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    buffer = max(1, min(int(buffer), n))
    draws = rng.random(n)
    pool = list(range(buffer))
    out = np.empty(n, dtype=np.int64)
    t = 0
    for i in range(buffer, n):
        j = int(draws[t] * len(pool))
        out[t] = pool[j]
        pool[j] = i
        t += 1
    rest = np.asarray(pool, dtype=np.int64)[rng.permutation(len(pool))]
    out[t:] = rest
    return out


class ShardDataset(IterableDataset):
    """Images (and labels) streamed from tar shards, transformed with per-sample seeded augmentations.

    Yields `(transform(img), label)` like the map-style datasets (wrapped by SeededTransformDataset):
    the augmentation of a sample is seeded by (seed, epoch, its global index), its position in the
    shard list, so it does not depend on which rank or worker reads it. `make_loader` calls
    `configure(...)` with the rank, world size, batch size, workers and batches to skip; `set_epoch`
    selects the epoch. `len()` is the number of samples; `ds[i]` reads one sample (slow: for plots).
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        transform: Callable[[Image.Image], Any] | None = None,
        seed: int = 0,
        shuffle_buffer: int = 1000,
        shuffle: bool = True,
        counts: Sequence[int] | None = None,
    ) -> None:
        self.urls = expand_urls(urls) if isinstance(urls, str) else [str(u) for u in urls]
        self.counts = list(counts) if counts is not None else index_shards(self.urls)
        if len(self.counts) != len(self.urls):
            raise ValueError(f"{len(self.counts)} counts for {len(self.urls)} shards")
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self.transform, self.seed, self.shuffle_buffer, self.shuffle = (
            transform,
            int(seed),
            int(shuffle_buffer),
            shuffle,
        )
        self.epoch = 0
        self.rank, self.world_size, self.batch_size, self.num_workers, self.skip_batches = 0, 1, 1, 0, 0
        self.num_skipped = 0

    # ----------------------------------------------------------------- configuration
    def __len__(self) -> int:
        return int(self.offsets[-1])

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order (and augmentations) the next iteration yields."""
        self.epoch = int(epoch)

    def configure(
        self,
        *,
        rank: int = 0,
        world_size: int = 1,
        batch_size: int = 1,
        num_workers: int = 0,
        skip_batches: int = 0,
        seed: int | None = None,
        epoch: int | None = None,
        shuffle: bool | None = None,
    ) -> ShardDataset:
        """Where this process reads in the epoch (called by `make_loader` before each epoch's loader)."""
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if batch_size < 1 or skip_batches < 0 or num_workers < 0:
            raise ValueError(f"bad batch_size={batch_size}, skip_batches={skip_batches} or num_workers={num_workers}")
        self.rank, self.world_size, self.batch_size = int(rank), int(world_size), int(batch_size)
        self.num_workers, self.skip_batches = int(num_workers), int(skip_batches)
        if seed is not None:
            self.seed = int(seed)
        if epoch is not None:
            self.epoch = int(epoch)
        if shuffle is not None:
            self.shuffle = bool(shuffle)
        return self

    @property
    def batches_per_rank(self) -> int:
        """Full batches each rank reads per epoch."""
        return len(self) // (self.world_size * self.batch_size)

    # ----------------------------------------------------------------- the epoch's plan
    def shard_order(self, epoch: int | None = None) -> np.ndarray:
        """The shards' order in an epoch (a permutation seeded by (seed, epoch))."""
        epoch = self.epoch if epoch is None else epoch
        if not self.shuffle:
            return np.arange(len(self.urls))
        return np.random.default_rng(derive_seed(self.seed, epoch, _TAG_SHARDS)).permutation(len(self.urls))

    def _lane_batches(self, lane: int, lanes: int) -> int:
        n = self.batches_per_rank
        return max(0, (n - lane + lanes - 1) // lanes)

    def lane_plan(self, lane: int, lanes: int) -> tuple[list[tuple[int, int, int]], np.ndarray]:
        """(segments, order) of one lane of this rank: segments (shard, first, end) in stream order
        and the lane's output order as positions in that stream (all of it, consumed or not)."""
        b = self.batch_size
        first_batch = sum(self._lane_batches(i, lanes) for i in range(lane))
        start = (self.rank * self.batches_per_rank + first_batch) * b
        size = self._lane_batches(lane, lanes) * b
        order = self.shard_order()
        counts = np.asarray(self.counts, dtype=np.int64)[order]
        ends = np.cumsum(counts)
        segments: list[tuple[int, int, int]] = []
        pos, stop = start, start + size
        k = int(np.searchsorted(ends, pos, side="right"))
        while pos < stop:
            shard_start = int(ends[k] - counts[k])
            lo, hi = pos - shard_start, min(int(ends[k]), stop) - shard_start
            if hi > lo:
                segments.append((int(order[k]), lo, hi))
            pos += hi - lo
            k += 1
        if self.shuffle:
            rng = np.random.default_rng(derive_seed(self.seed, self.epoch, self.rank, lane, _TAG_LANE))
            lane_order = buffer_shuffle_order(size, self.shuffle_buffer, rng)
        else:
            lane_order = np.arange(size, dtype=np.int64)
        return segments, lane_order

    def global_indices(self, lane: int, lanes: int, skip_batches: int = 0) -> np.ndarray:
        """Global sample indices a lane yields after `skip_batches` batches of the rank (for tests)."""
        segments, order = self.lane_plan(lane, lanes)
        flat = (
            np.concatenate([np.arange(lo, hi) + self.offsets[s] for s, lo, hi in segments])
            if segments
            else np.zeros(0, dtype=np.int64)
        )
        return flat[order[_consumed(skip_batches, lane, lanes) * self.batch_size :]]

    # ----------------------------------------------------------------- iteration
    def __iter__(self) -> Iterator[tuple[Any, int]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        lanes = max(1, self.num_workers)
        if workers != lanes:
            raise RuntimeError(
                f"ShardDataset was configured for {self.num_workers} loader workers but runs "
                f"in {workers}; build its DataLoader with make_loader"
            )
        k = self.skip_batches
        lane = (k + worker) % lanes
        segments, order = self.lane_plan(lane, lanes)
        yield from self._stream(segments, order[_consumed(k, lane, lanes) * self.batch_size :])

    def _stream(self, segments: list[tuple[int, int, int]], order: np.ndarray) -> Iterator[tuple[Any, int]]:
        if len(order) == 0:
            return
        needed = set(order.tolist())
        first = int(order.min()) if len(order) else 0
        pending: dict[int, tuple[int, str, str, dict[str, bytes]]] = {}
        t, pos = 0, 0
        for shard, lo, hi in segments:
            if t == len(order):
                return
            if pos + (hi - lo) <= first:  # every sample of this segment was consumed: not even opened
                pos += hi - lo
                continue
            path = self.urls[shard]
            with tarfile.open(path, "r:") as tf:
                for m, (key, members) in enumerate(_iter_groups(tf)):
                    if m < lo:
                        continue
                    if m >= hi:
                        break
                    if pos in needed:
                        data = {ext: tf.extractfile(info).read() for ext, info in members.items()}  # type: ignore[union-attr]
                        pending[pos] = (int(self.offsets[shard]) + m, path, key, data)
                    pos += 1
                    while t < len(order) and int(order[t]) in pending:
                        yield self._sample(*pending.pop(int(order[t])))
                        t += 1
        if t != len(order):
            raise RuntimeError(
                f"shards ended after {t} of {len(order)} samples: a shard changed since it was "
                f"indexed; delete {INDEX_NAME} beside the shards"
            )

    def _sample(self, gidx: int, path: str, key: str, data: dict[str, bytes]) -> tuple[Any, int]:
        img, label = _decode(path, key, data)
        if self.transform is None:
            return img, label
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, self.epoch, gidx))
            return self.transform(img), label

    def __getitem__(self, index: int) -> tuple[Any, int]:
        """One sample by global index (reads its shard up to it): for plots and inspection, not training."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} of {len(self)}")
        shard = int(np.searchsorted(self.offsets, index, side="right") - 1)
        m = index - int(self.offsets[shard])
        with tarfile.open(self.urls[shard], "r:") as tf:
            for i, (key, members) in enumerate(_iter_groups(tf)):
                if i == m:
                    data = {ext: tf.extractfile(info).read() for ext, info in members.items()}  # type: ignore[union-attr]
                    return self._sample(index, self.urls[shard], key, data)
        raise IndexError(f"sample {index} not found in {self.urls[shard]}")
