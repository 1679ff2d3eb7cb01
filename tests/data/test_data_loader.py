"""make_loader: order as a function of (seed, epoch), resume with skip_batches, worker seeding."""

import random

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from openjepa.data import make_loader


class _IndexDataset(Dataset):
    """Returns its index and records which indices were loaded."""

    def __init__(self, n):
        self.n, self.loaded = n, []

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.loaded.append(i)
        return i


class _RandomDataset(Dataset):
    """Returns draws from python random, numpy and torch (as an augmentation would)."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return torch.tensor([random.random(), float(np.random.rand()), torch.rand(()).item()])


def _order(loader):
    return [int(i) for batch in loader for i in batch]


def test_loader__same_seed_and_epoch_give_same_order():
    ds = _IndexDataset(50)
    a = _order(make_loader(ds, 8, seed=1, epoch=2))
    torch.manual_seed(123)  # the global RNG must not matter
    b = _order(make_loader(ds, 8, seed=1, epoch=2))
    assert a == b and len(a) == 48 and len(set(a)) == 48
    loader = make_loader(ds, 8, seed=1, epoch=2)
    assert _order(loader) == _order(loader)  # re-iterating repeats the epoch


def test_loader__different_epochs_or_seeds_give_different_orders():
    ds = _IndexDataset(50)
    base = _order(make_loader(ds, 8, seed=1, epoch=0))
    assert base != _order(make_loader(ds, 8, seed=1, epoch=1))
    assert base != _order(make_loader(ds, 8, seed=7, epoch=0))


def test_loader__no_shuffle_and_no_drop_last_keep_natural_order():
    assert _order(make_loader(_IndexDataset(10), 4, shuffle=False, drop_last=False)) == list(range(10))


@pytest.mark.parametrize("skip", [0, 1, 3, 6, 9])
def test_loader__skip_batches_gives_exact_tail_without_loading_skipped(skip):
    full = [b.tolist() for b in make_loader(_IndexDataset(50), 8, seed=5, epoch=3)]
    ds = _IndexDataset(50)
    loader = make_loader(ds, 8, seed=5, epoch=3, skip_batches=skip)
    tail = [b.tolist() for b in loader]
    assert tail == full[skip:] and len(loader) == len(full[skip:])
    skipped = {i for b in full[:skip] for i in b}
    assert not skipped & set(ds.loaded)


def test_loader__distributed_ranks_partition_and_skip():
    ds = _IndexDataset(40)
    r0 = _order(make_loader(ds, 4, seed=0, epoch=1, rank=0, world_size=2))
    r1 = _order(make_loader(ds, 4, seed=0, epoch=1, rank=1, world_size=2))
    assert len(r0) == len(r1) == 20 and not set(r0) & set(r1)
    assert r0 != _order(make_loader(ds, 4, seed=0, epoch=2, rank=0, world_size=2))
    resumed = _order(make_loader(ds, 4, seed=0, epoch=1, rank=1, world_size=2, skip_batches=2))
    assert resumed == r1[8:]


def test_loader__workers_seed_random_and_numpy_reproducibly():
    def draws(seed):
        loader = make_loader(_RandomDataset(), 2, shuffle=False, num_workers=2, seed=seed)
        return torch.cat(list(loader))

    a, b = draws(0), draws(0)
    assert torch.equal(a, b)
    # batch 0 comes from worker 0, batch 1 from worker 1: each RNG stream differs per worker
    for col in range(3):
        assert not torch.equal(a[0:2, col], a[2:4, col]), col
    assert not torch.equal(a, draws(1))


def test_loader__invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="skip_batches"):
        make_loader(_IndexDataset(4), 2, skip_batches=-1)
    with pytest.raises(ValueError, match="rank"):
        make_loader(_IndexDataset(4), 2, rank=2, world_size=2)
