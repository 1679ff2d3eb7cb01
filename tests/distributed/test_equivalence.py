"""2 ranks with batch B = 1 rank with batch 2B and the same masks (DDP, DDP + accumulation, FSDP2)."""

from __future__ import annotations

import pytest
import torch

from . import _worker
from .conftest import scenario

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def single_process():
    """Three train_steps of the tiny model on the 2B batches, one process."""
    torch.set_num_threads(1)
    model = _worker.tiny_model()
    losses, _ = _worker.train_steps(model, model, [[b] for b in _worker.fixed_batches()])
    return {"losses": losses, "params": _worker.full_params(model)}


def _max_diff(a: dict, b: dict) -> tuple[float, str]:
    assert a.keys() == b.keys()
    worst = max(a, key=lambda k: (a[k].float() - b[k].float()).abs().max().item())
    return (a[worst].float() - b[worst].float()).abs().max().item(), worst


@pytest.mark.parametrize("name", ["ddp", "ddp_accum"])
def test_ddp_two_ranks_batch_b_equal_one_rank_batch_2b(two_ranks, single_process, name):
    r0, r1 = scenario(two_ranks, name)
    assert r0["wrapper"] == "DistributedDataParallel"
    assert r0["losses"] == r1["losses"], "the logged loss is the mean over ranks, the same on each"
    assert r0["losses"] == pytest.approx(single_process["losses"], abs=1e-5)
    diff, where = _max_diff(r0["params"], single_process["params"])
    assert diff < 1e-5, f"{name}: parameters differ by {diff:.2e} at {where}"
    assert _max_diff(r0["params"], r1["params"])[0] == 0.0, "DDP replicas must stay identical"
    moved = _max_diff(r0["params"], _worker.full_params(_worker.tiny_model()))[0]
    assert moved > 1e-4, "the steps should change the parameters"


def test_fsdp2_trains_three_steps_and_matches_ddp(two_ranks, single_process):
    r0, r1 = scenario(two_ranks, "fsdp")
    ddp = scenario(two_ranks, "ddp")[0]
    assert r0["param_type"] == "DTensor", "parameters should be sharded DTensors"
    assert r0["global_shape"] == (1, 64, 192)
    assert r0["local_shape"][0] + r1["local_shape"][0] == 1  # dim 0 split across the 2 ranks
    assert r0["losses"] == r1["losses"]
    assert r0["losses"] == pytest.approx(ddp["losses"], abs=1e-5)
    assert r1["params"] is None, "only rank 0 keeps the gathered full state"
    diff, where = _max_diff(r0["params"], ddp["params"])
    assert diff < 1e-5, f"FSDP2 and DDP parameters differ by {diff:.2e} at {where}"
    assert _max_diff(r0["params"], single_process["params"])[0] < 1e-5
    assert r0["optimizer_keys"] == ["exp_avg", "exp_avg_sq", "step"]
