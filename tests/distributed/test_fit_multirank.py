"""`fit` on 2 gloo ranks: rank-0-only outputs, agreed stop on a signal to one rank, FSDP2 checkpoints
that load in one process, and streaming shards."""

from __future__ import annotations

import csv

import pytest
import torch

from openjepa.core.checkpoint import list_checkpoints, load_checkpoint, safe_load
from openjepa.models.ijepa import IJEPA
from openjepa.train import make_optimizer

from ..reliability._tiny import losses, params, same_params
from .conftest import scenario

pytestmark = pytest.mark.distributed
STEPS = 6  # 24 images, batch 4 per rank, 2 ranks: 3 steps per epoch, 2 epochs


def test_fit__two_ranks_only_rank0_writes_except_its_own_reference_csv(two_ranks):
    r0, r1 = scenario(two_ranks, "fit_ddp")
    assert (r0["steps"], r0["stop"], r1["steps"], r1["stop"]) == (STEPS, "completed", STEPS, "completed")
    assert (r0["rank"], r1["rank"]) == (0, 1)
    assert r1["writes"] == ["jepa_r1.csv"], f"rank 1 wrote {r1['writes']}"
    run = two_ranks["folder"] / "ddp"
    names = {p.name for p in run.iterdir()}
    assert {"jepa_r0.csv", "jepa_r1.csv", "metrics.csv", "params-ijepa.yaml", "jepa-latest.pth.tar"} <= names
    for rank in (0, 1):  # the reference's per-rank CSV: every step of this rank, epochs 1-2, itr 0-2
        with open(run / f"jepa_r{rank}.csv") as f:
            rows = list(csv.reader(f))
        assert [r[:2] for r in rows[1:]] == [[str(e), str(i)] for e in (1, 2) for i in range(3)]
    assert [s for s, _ in losses(run)] == list(range(1, STEPS + 1))
    ref = safe_load(run / "jepa-latest.pth.tar")
    assert ref["world_size"] == 2 and ref["epoch"] == 2


def test_fit__a_signal_to_one_rank_stops_both_with_a_checkpoint_and_resume_is_exact(two_ranks):
    r0, r1 = scenario(two_ranks, "fit_preempt")
    # rank 1 got SIGUSR1 after step 3; the ranks agree at the next log step (log_freq=2): step 4
    assert r0["first"] == r1["first"] == (4, "preempted")
    assert r0["second"] == r1["second"] == (STEPS, "completed")
    run, baseline = two_ranks["folder"] / "preempt", two_ranks["folder"] / "ddp"
    assert load_checkpoint(list_checkpoints(run)[-1][1])["step"] == STEPS
    assert not same_params(params(baseline), params(run)), "stopped + resumed differs from uninterrupted"
    assert losses(run) == losses(baseline)


def test_fit__fsdp2_checkpoint_is_full_loads_in_one_process_and_resumes(two_ranks):
    r0, r1 = scenario(two_ranks, "fit_fsdp")
    assert r0["first"] == r1["first"] == (2, "max_steps")
    assert r0["second"] == r1["second"] == (STEPS, "completed")
    run = two_ranks["folder"] / "fsdp"
    state = load_checkpoint(list_checkpoints(run)[-1][1])
    assert state["config"]["meta"]["fsdp"] is True
    model = IJEPA.from_arch(state["arch"])  # one process, no process group, plain tensors
    for part in ("encoder", "predictor", "target_encoder"):
        getattr(model, part).load_state_dict(state[part], strict=True)
        assert all(type(t) is torch.Tensor for t in state[part].values())
    opt = make_optimizer(model.encoder, model.predictor)
    opt.load_state_dict(state["optimizer"])
    # FSDP2 + activation checkpointing trains like DDP (float rounding apart)
    ddp = params(two_ranks["folder"] / "ddp")
    fsdp = params(run)
    worst = max((ddp[k] - fsdp[k]).abs().max().item() for k in ddp)
    assert worst < 1e-4, f"FSDP2 run differs from the DDP run by {worst:.2e}"


def test_fit__two_ranks_stream_tar_shards_with_workers(two_ranks):
    r0, r1 = scenario(two_ranks, "fit_shards")
    # 48 samples / (2 ranks x batch 4) = 6 steps in the one epoch
    assert (r0["steps"], r0["stop"]) == (r1["steps"], r1["stop"]) == (6, "completed")
    assert [s for s, _ in losses(two_ranks["folder"] / "shards_run")] == list(range(1, 7))
