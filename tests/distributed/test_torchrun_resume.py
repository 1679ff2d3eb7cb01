"""A 2-rank torchrun run SIGKILLed (the whole process group) and relaunched with --resume continues
from its newest checkpoint and ends exactly where an uninterrupted 2-rank run ends."""

from __future__ import annotations

import json
import re
import shutil
import signal

import pytest

from openjepa.core.checkpoint import list_checkpoints

from ..reliability._tiny import TINY, losses, params, same_params
from ._launch import PYTHON, child_env, kill_group, start, wait, wait_until
from .conftest import free_port

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX process groups"),
]
STEPS = 6


def _torchrun(run, port: int) -> list[str]:
    torchrun = shutil.which("torchrun") or "torchrun"
    cmd = [
        torchrun,
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "--rdzv_backend",
        "c10d",
        "--rdzv_endpoint",
        f"127.0.0.1:{port}",
        "-m",
        "openjepa.cli.main",
        "pretrain",
        "--no-progress",
        "--data",
        "shapes:24",
        "--out",
        str(run),
    ]
    if not shutil.which("torchrun"):
        cmd = [PYTHON, "-m", "torch.distributed.run", *cmd[1:]]
    for item in TINY:
        cmd += ["--set", item]
    return cmd


def test_torchrun_two_ranks_killed_then_resumed_completes_like_an_uninterrupted_run(tmp_path, two_ranks):
    run, log1, log2 = tmp_path / "run", tmp_path / "first.log", tmp_path / "second.log"
    # 1 s per step: the kill lands after the step-2 checkpoint, well before step 6
    proc = start(_torchrun(run, free_port()), child_env(OPENJEPA_TEST_STEP_DELAY="1.0"), log1)
    wait_until(proc, lambda: bool(list_checkpoints(run)), log1, "the first checkpoint")
    kill_group(proc)
    done = [s for s, _ in list_checkpoints(run)]
    assert done and done[-1] < STEPS, f"the kill must land before the end: {done}"

    proc = start(_torchrun(run, free_port()) + ["--resume"], child_env(), log2)
    rc = wait(proc, log2)
    out = log2.read_text()
    assert rc == 0, out[-3000:]
    resumed = re.search(r"resumed from \S*ckpt-step(\d+)\.pt \(step (\d+)", out)
    assert resumed and int(resumed.group(1)) == done[-1], out[-3000:]
    summaries = [json.loads(line) for line in out.splitlines() if line.startswith('{"folder"')]
    assert len(summaries) == 1, "rank 0 alone prints the summary"
    assert summaries[0]["steps"] == STEPS and summaries[0]["world_size"] == 2
    assert [s for s, _ in list_checkpoints(run)][-1] == STEPS
    baseline = two_ranks["folder"] / "ddp"  # the same 2-rank run, uninterrupted (conftest session)
    assert not same_params(params(baseline), params(run)), "resumed run differs from the uninterrupted one"
    assert losses(run) == losses(baseline)
