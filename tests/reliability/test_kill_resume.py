"""SIGKILL at a random step, and in the middle of a checkpoint write, then `fit(resume=True)`:
the resumed run ends bitwise equal to an uninterrupted one (fp32, CPU)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from openjepa.core.checkpoint import list_checkpoints, load_checkpoint
from openjepa.train.loop import fit

from ._tiny import TOTAL_STEPS, losses, params, same_params, tiny_cfg

CHILD = Path(__file__).resolve().parent / "_child.py"
pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")


def _start(mode: str, step: int, signal_file: Path, folder: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(CHILD), mode, str(step), str(signal_file), str(folder)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(proc: subprocess.Popen, ready, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"child exited ({proc.returncode}) before {what}:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read()


def _resume_and_compare(folder: Path, baseline: Path, note: str) -> None:
    result = fit(tiny_cfg(folder), resume=True, progress=False)
    assert result.steps == TOTAL_STEPS and result.stop_reason == "completed"
    diff = same_params(params(baseline), params(folder))
    assert not diff, f"{note}: resumed run differs from the uninterrupted one in {diff[:5]}"
    # every step logged exactly once, with the uninterrupted run's loss
    assert losses(folder) == losses(baseline), note


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_equals_uninterrupted_run_bitwise(tmp_path, baseline):
    seed = int(os.environ.get("OPENJEPA_FAULT_SEED", random.randrange(2**31)))
    rng = random.Random(seed)
    target = rng.randint(3, TOTAL_STEPS - 2)  # epoch 1 mid, the epoch boundary and epoch 2 mid are all possible
    delay = rng.uniform(0.0, 0.5)  # the child dawdles 0.25 s per step: lands mid-step, mid-log or mid-save
    note = f"OPENJEPA_FAULT_SEED={seed} (kill after step {target} + {delay:.3f} s)"
    folder, progress = tmp_path / "run", tmp_path / "progress"
    proc = _start("slow-after", target, progress, folder)
    _wait_for(
        proc,
        lambda: progress.exists() and progress.read_text().isdigit() and int(progress.read_text()) >= target,
        f"step {target}",
    )
    time.sleep(delay)
    _kill(proc)
    done = [s for s, _ in list_checkpoints(folder)]
    assert done and done[-1] < TOTAL_STEPS, f"{note}: the kill must land before the run finished: {done}"
    _resume_and_compare(folder, baseline, note)


@pytest.mark.slow
def test_sigkill_inside_a_checkpoint_write_keeps_the_previous_checkpoint_and_resumes_exactly(tmp_path, baseline):
    folder, flag = tmp_path / "run", tmp_path / "inside-save"
    proc = _start("block-in-save", 4, flag, folder)  # step 4: the middle of epoch 1
    _wait_for(proc, flag.exists, "the step-4 checkpoint write")
    _kill(proc)

    # the half-written file is only ever a hidden temp file; no partial ckpt-*.pt is visible
    assert [s for s, _ in list_checkpoints(folder)] == [2]
    assert not (folder / "ckpt-step00000004.pt").exists()
    partial = list(folder.glob(".ckpt-step00000004.pt.*.tmp"))
    assert len(partial) == 1 and partial[0].stat().st_size > 0, "the kill should land mid-write"
    assert load_checkpoint(folder / "ckpt-step00000002.pt")["step"] == 2  # checksum verifies, loads

    _resume_and_compare(folder, baseline, "killed inside the step-4 checkpoint write")
    assert not list(folder.glob(".*.tmp")), "resume should remove the partial file left by the kill"


def test_cli_resume_flag__continues_exactly_and_refuses_without_it(tmp_path, baseline, capsys, cli_main):
    from ._tiny import TINY

    run = tmp_path / "run"
    fit(tiny_cfg(run, "optimization.max_steps=5"), progress=False)  # stopped mid-epoch 1
    argv = ["pretrain", "--no-progress", "--data", "shapes:24", "--out", str(run)]
    for item in TINY:
        argv += ["--set", item]
    assert cli_main(argv) == 2
    assert "pass --resume to continue that run" in capsys.readouterr().err
    assert cli_main(argv + ["--resume"]) == 0
    assert not same_params(params(baseline), params(run))
    assert losses(run) == losses(baseline)
