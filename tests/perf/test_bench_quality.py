"""bench/quality.py end to end on a tiny .npz: pretrain within a budget, probe, print the issue's JSON line."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
KEYS = (
    "dataset",
    "minutes",
    "epochs",
    "ijepa_linear_top1",
    "ijepa_knn_top1",
    "random_linear_top1",
    "random_knn_top1",
    "pixels_linear_top1",
)


# a one-block model and tiny batches: every bench test trains in seconds
TINY = [
    "meta.depth=1",
    "meta.pred_depth=1",
    "meta.pred_emb_dim=48",
    "data.crop_size=32",
    "data.batch_size=16",
    "mask.patch_size=4",
    "mask.min_keep=4",
    "logging.tensorboard=false",
    "logging.plots=false",
    "logging.collapse_every_steps=0",
]


def _tiny_npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    n_train, n_test = 96, 40
    y = np.arange(n_train + n_test) % 2
    x = rng.integers(0, 60, size=(n_train + n_test, 32, 32, 3), dtype=np.uint8)
    x[y == 1, 8:24, 8:24] = 220  # class 1: a bright square, so a probe has something to find
    np.savez(path, x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:], y_test=y[n_train:])
    return path


@pytest.mark.slow
def test_bench_quality__json_line_figures_and_a_knn_curve(tmp_path):
    data = _tiny_npz(tmp_path / "tiny.npz")
    out = tmp_path / "run"
    tiny = TINY
    cmd = [
        sys.executable,
        str(REPO / "bench" / "quality.py"),
        "--data",
        str(data),
        "--minutes",
        "0.05",
        "--config",
        "demo",
        "--out",
        str(out),
        "--knn-every",
        "1",
        "--pooling",
        "avg_last4",
    ]
    for o in tiny:
        cmd += ["--set", o]
    lines = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout.strip().splitlines()
    assert len(lines) == 1
    res = json.loads(lines[0])
    for key in KEYS:
        assert key in res, key
    assert res["dataset"] == "tiny.npz" and res["steps"] >= 1  # a tiny budget may stop inside epoch 1
    for key in KEYS[3:]:
        assert 0.0 <= res[key] <= 1.0
    curve = res["knn_curve"]
    assert curve[0]["epoch"] == 0 and [p["epoch"] for p in curve[1:]] == list(range(1, len(curve)))
    assert all(b["minutes"] >= a["minutes"] for a, b in zip(curve, curve[1:]))
    assert json.loads((out / "quality.json").read_text()) == res
    for png in ("knn_vs_time.png", "pca_maps.png"):
        with Image.open(out / png) as im:
            assert im.size[0] > 200


@pytest.mark.slow
def test_bench_ablations__one_quality_command_per_row_with_its_switch(tmp_path):
    out = (
        subprocess.run(
            [
                sys.executable,
                str(REPO / "bench" / "ablations.py"),
                "--data",
                "x.npz",
                "--minutes",
                "3",
                "--out",
                str(tmp_path),
                "--dry-run",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        .stdout.strip()
        .splitlines()
    )
    switches = {
        "ijepa": None,
        "pixels": "optimization.target=pixels",
        "random_mask": "mask.strategy=random",
        "one_block": "mask.strategy=block",
        "target_from_input": "optimization.target_from=input",
        "pred_depth_1": "meta.pred_depth=1",
        "avg_targets_3": "optimization.target_layers=3",
        "vicreg": "optimization.var_weight=1.0",  # the first of its two switches
        "sigreg": "optimization.sigreg_weight=0.05",
        "patch_fan_in": "meta.init=patch_fan_in",
        "mse": "optimization.loss=mse",
        "wd_const": "optimization.final_weight_decay=0.04",
        "two_targets": "mask.num_pred_masks=2",
        "xavier": "meta.init=xavier",
        "ema_999": "optimization.ema=[0.999,1.0]",
        "two_contexts": "mask.num_enc_masks=2",
    }
    assert len(out) == len(switches)
    for line, (row, switch) in zip(out, switches.items()):
        assert "bench/quality.py" in line and f"--out {tmp_path / row}" in line
        assert f"--cache {tmp_path / 'features'}" in line  # shared: random init and pixels computed once
        assert (f"--set {shlex.quote(switch)}" in line) if switch else "--set" not in line


@pytest.mark.slow
@pytest.mark.timeout(900)  # five short pretraining runs in subprocesses
def test_select_recipe__scores_variants_on_validation_then_runs_the_best_on_test(tmp_path):
    data = _tiny_npz(tmp_path / "tiny.npz")
    out = tmp_path / "select"
    tiny = [
        "meta.depth=1",
        "meta.pred_depth=1",
        "meta.pred_emb_dim=48",
        "data.crop_size=32",
        "data.batch_size=16",
        "mask.patch_size=4",
        "mask.min_keep=4",
        "logging.tensorboard=false",
        "logging.plots=false",
        "logging.collapse_every_steps=0",
        "data.num_workers=0",
    ]
    cmd = [
        sys.executable,
        str(REPO / "bench" / "select_recipe.py"),
        "--data",
        str(data),
        "--config",
        "demo",
        "--val",
        "32",
        "--val-epochs",
        "1",
        "--epochs",
        "2",
        "--minutes",
        "2",
        "--val-minutes",
        "1.5",
        "--parallel",
        "2",
        "--variant",
        "base:",
        "--variant",
        "slow:optimization.lr=1e-5",
        "--out",
        str(out),
    ]
    for o in tiny:
        cmd += ["--set", o]
    res = json.loads(
        subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=True).stdout.strip().splitlines()[-1]
    )
    assert set(res["val"]) == {"base", "slow"}
    scores = {n: v["ijepa_linear_top1"] for n, v in res["val"].items()}
    assert res["selected"] == max(scores, key=scores.get)
    assert res["selected_overrides"] == {"base": [], "slow": ["optimization.lr=1e-5"]}[res["selected"]]
    # the validation runs held out 32 train images; the final run trained on all 96 for the fixed 2 epochs
    val_run = json.loads((out / f"val-{res['selected']}" / "quality.json").read_text())
    assert val_run["val_holdout"] == 32 and val_run["epochs"] == 1 and val_run["minutes"] == 1.5
    assert "random_linear_top1" not in val_run  # floors are skipped while selecting
    final = res["final"]
    assert "val_holdout" not in final and final["epochs"] == 2 and final["steps"] == 2 * (96 // 16)
    assert final["minutes"] == 2 and {"random_linear_top1", "pixels_linear_top1"} <= set(final)
    assert json.loads((out / "select.json").read_text()) == res

    # --resume reuses finished validation runs and only runs the new variant
    stamps = {n: (out / f"val-{n}" / "quality.json").stat().st_mtime_ns for n in ("base", "slow")}
    again = [*cmd, "--resume", "--variant", "fast:optimization.lr=1e-3"]
    res2 = json.loads(
        subprocess.run(again, capture_output=True, text=True, timeout=900, check=True).stdout.strip().splitlines()[-1]
    )
    assert set(res2["val"]) == {"base", "slow", "fast"}
    assert {n: res2["val"][n] for n in ("base", "slow")} == {n: res["val"][n] for n in ("base", "slow")}
    assert {n: (out / f"val-{n}" / "quality.json").stat().st_mtime_ns for n in ("base", "slow")} == stamps
    # a reused result must come from the same overrides, and an unfinished run is not silently replaced
    clash = [*cmd[: cmd.index("--variant")], "--resume", "--variant", "base:optimization.lr=1e-2", "--out", str(out)]
    for o in tiny:
        clash += ["--set", o]
    bad = subprocess.run(clash, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "was run with overrides" in bad.stderr
    (out / "val-half").mkdir()
    bad = subprocess.run(
        [*again, "--variant", "half:optimization.lr=1e-4"], capture_output=True, text=True, timeout=300
    )
    assert bad.returncode != 0 and "unfinished run" in bad.stderr
