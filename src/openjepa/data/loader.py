"""DataLoader construction with an order that is a pure function of (seed, epoch), and mid-epoch resume."""

from __future__ import annotations

import itertools
import random
import signal
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler
from torch.utils.data.distributed import DistributedSampler

__all__ = ["EpochSampler", "SkipSampler", "seed_worker", "make_loader"]


class EpochSampler(Sampler[int]):
    """Single-process sampler: a permutation drawn from ``torch.Generator(seed + epoch)``, or 0..n-1."""

    def __init__(self, n: int, shuffle: bool = True, seed: int = 0, epoch: int = 0) -> None:
        """Store the dataset length and the (seed, epoch) that fix the order."""
        self.n, self.shuffle, self.seed, self.epoch = int(n), bool(shuffle), int(seed), int(epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        """Yield the indices of this epoch."""
        if not self.shuffle:
            return iter(range(self.n))
        # a fresh generator per iteration: iterating twice gives the same order, unlike a shared one
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        """Number of indices per epoch."""
        return self.n


class SkipSampler(Sampler[int]):
    """Wrap a sampler and drop its first ``skip`` indices (their samples are never loaded)."""

    def __init__(self, sampler: Sampler[int], skip: int) -> None:
        """Store the wrapped sampler and how many leading indices to drop."""
        if skip < 0:
            raise ValueError(f"SkipSampler needs skip >= 0, got {skip}")
        self.sampler, self.skip = sampler, int(skip)

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to the wrapped sampler when it has one."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        """Yield the wrapped sampler's indices after the first ``skip``."""
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        """Indices left after skipping."""
        return max(0, len(self.sampler) - self.skip)  # type: ignore[arg-type]


def seed_worker(worker_id: int) -> None:
    """Seed python ``random`` and numpy in a worker from torch's per-worker seed."""
    # recent torch worker loops already do much the same; doing it here keeps the guarantee
    # independent of the torch version and ties all three RNGs to the one seed torch reports
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


# Signals with which a scheduler asks the run to checkpoint and stop (see openjepa.train.loop.StopSignals).
# SLURM delivers them to every process of a job step, loader workers included; a worker killed by one
# would crash the run before it could checkpoint, so workers ignore them (the main process handles them).
STOP_SIGNALS = ("SIGTERM", "SIGUSR1")


def _init_worker(worker_id: int) -> None:
    """Seed the worker's RNGs and leave the stop signals to the main process."""
    seed_worker(worker_id)
    for name in STOP_SIGNALS:
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, signal.SIG_IGN)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    collate_fn: Callable[[list], Any] | None = None,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    seed: int = 0,
    epoch: int = 0,
    pin_memory: bool = False,
    rank: int = 0,
    world_size: int = 1,
    skip_batches: int = 0,
) -> DataLoader:
    """Build a DataLoader for one epoch whose sample order depends only on (seed, epoch[, rank]).

    Map-style datasets: `DistributedSampler` (with `set_epoch`) when world_size > 1, else a seeded
    permutation; `skip_batches` drops the batches a resumed run already trained on. Streaming
    datasets (`IterableDataset` with `configure`, e.g. `ShardDataset`) are configured to do the same.
    """
    if batch_size < 1:
        raise ValueError(f"make_loader needs batch_size >= 1, got {batch_size}")
    if skip_batches < 0:
        raise ValueError(f"make_loader needs skip_batches >= 0, got {skip_batches}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"make_loader needs 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    sampler: Sampler[int] | None = None  # a streaming dataset orders itself
    if isinstance(dataset, IterableDataset):
        _configure_stream(dataset, rank, world_size, batch_size, num_workers, skip_batches, seed, epoch, shuffle)
    else:
        sampler = _epoch_sampler(dataset, batch_size, shuffle, drop_last, seed, epoch, rank, world_size, skip_batches)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate_fn,
        drop_last=drop_last,
        num_workers=num_workers,
        pin_memory=pin_memory,
        worker_init_fn=_init_worker if num_workers > 0 else None,
        persistent_workers=False,
        generator=_worker_generator(seed, epoch, rank),
    )


def _worker_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """The generator the workers' base seed is drawn from, seeded by (seed, epoch, rank)."""
    # so augmentations repeat for the same (seed, epoch, rank) without depending on the global torch RNG state
    worker_seed = int(np.random.SeedSequence([int(seed), int(epoch), int(rank)]).generate_state(1)[0])
    gen = torch.Generator()
    gen.manual_seed(worker_seed)
    return gen


def _configure_stream(
    dataset: IterableDataset,
    rank: int,
    world_size: int,
    batch_size: int,
    num_workers: int,
    skip_batches: int,
    seed: int,
    epoch: int,
    shuffle: bool,
) -> None:
    """Tell a streaming dataset where this process stands; it splits itself and skips consumed batches."""
    configure = getattr(dataset, "configure", None)
    if configure is None:
        if world_size > 1 or skip_batches:
            raise ValueError(
                f"{type(dataset).__name__} is an IterableDataset without configure(); "
                f"it cannot be split across ranks or resumed mid-epoch"
            )
        return
    configure(
        rank=rank,
        world_size=world_size,
        batch_size=batch_size,
        num_workers=num_workers,
        skip_batches=skip_batches,
        seed=seed,
        epoch=epoch,
        shuffle=shuffle,
    )


def _epoch_sampler(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    drop_last: bool,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    skip_batches: int,
) -> Sampler[int]:
    """The map-style order of one epoch on this rank, less the batches a resumed run already trained on."""
    sampler: Sampler[int]
    if world_size > 1:
        sampler = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
        sampler.set_epoch(epoch)
    else:
        sampler = EpochSampler(len(dataset), shuffle=shuffle, seed=seed, epoch=epoch)  # type: ignore[arg-type]
    if skip_batches:
        sampler = SkipSampler(sampler, skip_batches * batch_size)
    return sampler
