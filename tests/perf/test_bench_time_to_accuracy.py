"""bench/time_to_accuracy.py end to end on a tiny .npz: two variants x two seeds, probed checkpoints, one chart."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .test_bench_quality import TINY, _tiny_npz

REPO = Path(__file__).resolve().parents[2]


def test_summarise__mean_spread_and_minutes_to_a_level():
    sys.path.insert(0, str(REPO / "bench"))
    from time_to_accuracy import minutes_to, parse_variant, summarise

    a = [{"minutes": 1.0, "linear": 0.4, "knn": 0.3}, {"minutes": 2.0, "linear": 0.6, "knn": 0.5}]
    b = [{"minutes": 1.2, "linear": 0.5, "knn": 0.3}, {"minutes": 2.2, "linear": 0.8, "knn": 0.7}]
    points = summarise([a, b])
    assert points[0]["minutes"] == 1.1 and points[0]["linear"] == 0.45
    assert (points[1]["linear_min"], points[1]["linear_max"]) == (0.6, 0.8)
    assert minutes_to(points, "linear", 0.7) == 2.1 and minutes_to(points, "knn", 0.9) is None
    assert parse_variant("bf16:meta.precision=bf16;optimization.lr=1e-3") == (
        "bf16",
        ["meta.precision=bf16", "optimization.lr=1e-3"],
    )
    with pytest.raises(SystemExit):
        parse_variant("no-colon")


def test_random_inits__a_floor_for_each_variant_that_starts_elsewhere(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    import argparse

    from time_to_accuracy import random_inits

    args = argparse.Namespace(eval_data=str(_tiny_npz(tmp_path / "tiny.npz")), overrides=TINY, config="demo")
    variants = [("shipped", []), ("lowlr", ["optimization.lr=1e-4"]), ("fan", ["meta.init=patch_fan_in"])]
    encoders = random_inits(variants, args)
    # an lr change starts from the same weights (no floor of its own); a different init does not
    assert list(encoders) == ["random init", "random init (fan)"]
    base, fan = encoders["random init"], encoders["random init (fan)"]
    assert fan.patch_embed.proj.weight.std() > 3 * base.patch_embed.proj.weight.std()


def _settings(tmp_path: Path, **changes) -> argparse.Namespace:
    base = dict(data="x.npz", config="demo", minutes=1.0, every=0.5, val=24, overrides=[], pooling=None, max_test=None)
    return argparse.Namespace(**{"out": str(tmp_path), "resume": True, **base, **changes})


def test_resume__reuses_finished_curves_only_under_the_same_settings(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    from time_to_accuracy import load_finished, save_finished

    curve = [{"step": 5, "minutes": 1.0, "linear": 0.5, "knn": 0.4}]
    save_finished(_settings(tmp_path), {"a": ["optimization.lr=1e-4"]}, {"a": {0: curve, 2: curve}})
    assert load_finished(_settings(tmp_path), [("a", ["optimization.lr=1e-4"]), ("b", [])]) == {
        "a": {0: curve, 2: curve}
    }
    assert load_finished(_settings(tmp_path, resume=False), [("a", [])]) == {}  # without --resume: nothing reused
    with pytest.raises(SystemExit, match="--minutes 1.0"):
        load_finished(_settings(tmp_path, minutes=2.0), [("a", ["optimization.lr=1e-4"])])
    with pytest.raises(SystemExit, match="variant 'a' was run with"):
        load_finished(_settings(tmp_path), [("a", [])])


def test_resume__an_unfinished_run_is_set_aside_never_deleted(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    from time_to_accuracy import set_aside

    run = tmp_path / "shipped-s0"
    run.mkdir()
    (run / "jepa-ep1.pth.tar").write_bytes(b"checkpoint")
    with pytest.raises(SystemExit, match="--resume"):
        set_aside(run, resume=False)
    set_aside(run, resume=True)
    assert (
        not run.exists() and (tmp_path / "shipped-s0.interrupted-1" / "jepa-ep1.pth.tar").read_bytes() == b"checkpoint"
    )
    run.mkdir()
    set_aside(run, resume=True)
    assert (tmp_path / "shipped-s0.interrupted-2").is_dir()


@pytest.mark.slow
def test_time_to_accuracy__curves_per_variant_and_seed_with_floors_and_a_chart(tmp_path):
    data = _tiny_npz(tmp_path / "tiny.npz")
    out = tmp_path / "tta"
    cmd = [sys.executable, str(REPO / "bench" / "time_to_accuracy.py"), "--data", str(data), "--config", "demo"]
    # Generous against the clock: a loaded CI machine must still fit two checkpoints in the budget.
    cmd += ["--minutes", "0.2", "--every", "0.05", "--seeds", "0", "1", "--out", str(out)]
    cmd += ["--val", "24", "--pooling", "avg_last4"]  # probes score held-out train images, never the test split
    cmd += ["--variant", "shipped:", "--variant", "lowlr:optimization.lr=1e-4"]
    for o in TINY:
        cmd += ["--set", o]
    lines = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout.strip().splitlines()
    res = json.loads(lines[-1])
    assert set(res["curves"]) == {"shipped", "lowlr"} and set(res["floors"]) == {"random init", "raw pixels"}
    assert (res["val_holdout"], res["pooling"]) == (24, "avg_last4")
    partial = json.loads((out / "partial.json").read_text())  # kept after every (variant, seed)
    assert partial["runs"] == res["runs"]
    with np.load(out / "val.npz") as val:
        assert len(val["x_test"]) == 24 and len(val["x_train"]) == 96 - 24
    for name, runs in res["runs"].items():
        assert len(runs) == 2  # one curve per seed
        assert all(len(curve) >= 2 for curve in runs)  # several checkpoints probed along the way
        for point in res["curves"][name]:
            assert point["linear_min"] <= point["linear"] <= point["linear_max"]
            assert 0.0 <= point["knn"] <= 1.0
    minutes = [p["minutes"] for p in res["curves"]["shipped"]]
    assert minutes == sorted(minutes)
    with Image.open(out / "time_to_accuracy.png") as im:
        assert im.size[0] > 500
    # the same command with --resume and one more seed trains only that seed
    seeds = cmd.index("--seeds")
    cmd[seeds : seeds + 3] = ["--seeds", "0", "1", "2"]
    again = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600, check=True)
    res2 = json.loads(again.stdout.strip().splitlines()[-1])
    assert [runs[:2] for runs in res2["runs"].values()] == list(res["runs"].values())
    assert all(len(runs) == 3 for runs in res2["runs"].values())
    assert not list(out.glob("*.interrupted-*"))  # nothing was unfinished
