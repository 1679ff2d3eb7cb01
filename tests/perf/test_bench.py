"""The benchmark's analytic FLOP count agrees with torch's FLOP counter, and the bench runs."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from openjepa.models.ijepa import set_fast_paths

from ._util import tiny_batches, tiny_ijepa

REPO = Path(__file__).resolve().parents[2]


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_train_step", REPO / "bench" / "train_step.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("nenc", [1, 2])
def test_analytic_forward_flops__equal_torch_flop_counter(nenc):
    bench = _bench_module()
    model = set_fast_paths(tiny_ijepa(), False)  # the reference computation the count describes
    model.predictor_per_block = False
    imgs, me, mp = tiny_batches(1, nenc=nenc)[0]
    ours = bench.forward_flops(model, len(imgs), me, mp)
    with torch.no_grad():
        assert ours["target"] == _counted(lambda: model.target_encoder(imgs))
        assert ours["context"] == _counted(lambda: model.encoder(imgs, me))
        z = model.encoder(imgs, me)
        assert ours["predictor"] == _counted(lambda: model.predictor(z, me, mp))
    assert bench.step_flops(model, len(imgs), me, mp) == ours["target"] + 3 * (ours["context"] + ours["predictor"])


@pytest.mark.slow
def test_bench_train_step__prints_one_json_line_with_the_metrics():
    out = (
        subprocess.run(
            [
                sys.executable,
                str(REPO / "bench" / "train_step.py"),
                "--model",
                "vit_tiny",
                "--img-size",
                "64",
                "--patch-size",
                "8",
                "--batch-size",
                "2",
                "--steps",
                "2",
                "--warmup",
                "1",
                "--pred-depth",
                "2",
                "--pred-emb-dim",
                "48",
                "--min-keep",
                "2",
                "--threads",
                "1",
                "--peak-size",
                "256",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        .stdout.strip()
        .splitlines()
    )
    assert len(out) == 1
    res = json.loads(out[0])
    for key in (
        "imgs_per_s",
        "step_s_median",
        "tflops_achieved",
        "peak_matmul_tflops",
        "mfu",
        "peak_mem_mb",
        "baseline",
        "speedup",
    ):
        assert key in res, key
    assert res["baseline"]["imgs_per_s"] > 0 and 0 < res["mfu"] < 1.5
    assert res["first_loss_abs_diff"] < 1e-5
