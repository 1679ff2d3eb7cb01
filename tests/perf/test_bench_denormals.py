"""bench/denormals.py: a checkpoint stepped with subnormals flushed and kept, in fresh processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from openjepa.config import load_config, recipe_path
from openjepa.train.loop import fit

from .test_bench_quality import TINY, _tiny_npz

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_denormals__times_both_modes_from_a_run_checkpoint(tmp_path):
    data = _tiny_npz(tmp_path / "tiny.npz")
    overrides = [*TINY, "meta.depth=2", f"data.dataset={data}", f"logging.folder={tmp_path / 'run'}"]
    fit(
        load_config(recipe_path("demo"), [*overrides, "optimization.epochs=1", "optimization.warmup=0"]), progress=False
    )
    cmd = [sys.executable, str(REPO / "bench" / "denormals.py"), "--run", str(tmp_path / "run")]
    cmd += ["--steps", "1", "--rounds", "1"]
    res = json.loads(subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout)
    assert res["bench"] == "denormals"
    assert set(res["rounds"]) == {"flush", "keep"} and all(len(v) == 1 for v in res["rounds"].values())
    secs = res["seconds_per_step"]
    assert secs["flushed"] > 0 and secs["kept"] > 0
    assert res["speedup"] == pytest.approx(secs["kept"] / secs["flushed"], rel=0.01)


def test_flushing_first_thing_reaches_every_intra_op_thread():
    # Set before the first parallel op (as the CLI and the flushed worker do), the mode is inherited by
    # the OpenMP workers: a multiply split across 2 threads zeroes every subnormal, not one thread's share.
    code = (
        "from openjepa.core.precision import flush_denormals; import torch; flush_denormals(); "
        "torch.set_num_threads(2); print(int((torch.full((1 << 20,), 1e-39) * 1.0).count_nonzero()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert int(out.stdout.strip()) == 0
