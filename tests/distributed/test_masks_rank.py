"""Per-rank mask streams: every rank draws its own masks; one process keeps the original stream."""

from __future__ import annotations

import torch

from openjepa.config import load_config
from openjepa.masks import MultiBlockMaskCollator, RandomMaskCollator
from openjepa.masks.build import build_collator

from ..reliability._tiny import TINY


def _masks(collator, epoch=0, start=0, batches=3):
    collator.set_epoch(epoch, start_batch=start)
    samples = [(torch.zeros(3, 32, 32), 0)] * 4
    return [collator(samples)[1:] for _ in range(batches)]


def _same(a, b):
    return all(torch.equal(x, y) for (ea, pa), (eb, pb) in zip(a, b) for x, y in zip(ea + pa, eb + pb))


def test_ranks_draw_different_masks_and_rank0_of_1_is_the_single_process_stream():
    cfg = load_config(None, TINY)
    single = _masks(build_collator(cfg))
    rank0, rank1 = (_masks(build_collator(cfg, r, 2)) for r in (0, 1))
    assert _same(_masks(build_collator(cfg, 0, 1)), single)
    assert not _same(rank0, rank1), "ranks must not share masks"
    # rank r's batch i is the epoch's global batch i * world + r: rank 0's batch 1 is one process's batch 2
    assert _same(rank0[1:2], single[2:3])
    # resuming mid-epoch (start_batch) continues each rank's own stream
    assert _same(_masks(build_collator(cfg, 1, 2), start=1, batches=2), rank1[1:])


def test_random_collator_has_per_rank_streams_too():
    a, b = RandomMaskCollator(32, 4, seed=0), RandomMaskCollator(32, 4, seed=0)
    b.set_rank(1, 2)
    assert not _same(_masks(a), _masks(b))
    c = MultiBlockMaskCollator(32, 4, (0.85, 1.0), (0.15, 0.2), (0.75, 1.5), 1, 4, 4)
    try:
        c.set_rank(2, 2)
    except ValueError as e:
        assert "rank" in str(e)
    else:
        raise AssertionError("rank 2 of 2 must be refused")
