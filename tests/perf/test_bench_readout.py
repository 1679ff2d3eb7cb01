"""bench/readout.py: layer-choice slices of `grid_all` / `avg_all` features, scored on a validation carve of train."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from openjepa.config import load_config, recipe_path
from openjepa.models.pooling import pool_features
from openjepa.train.loop import fit

from .test_bench_quality import TINY, _tiny_npz

REPO = Path(__file__).resolve().parents[2]


def test_readouts__slices_pick_the_last_layers_of_avg_all_features():
    sys.path.insert(0, str(REPO / "bench"))
    from readout import readouts, whole_image

    from openjepa.models.registry import create_encoder

    enc = create_encoder("vit_tiny", patch_size=4, img_size=16, depth=6).eval()
    imgs = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        feats = pool_features(enc, imgs, "avg_all")  # (2, 6 * 192)
        slices = readouts(6, 192)
        assert set(slices) == {"last1", "last2", "last4", "all6"}
        assert torch.allclose(feats[:, slices["last1"]], pool_features(enc, imgs, "avg"), atol=1e-5)
        assert torch.allclose(feats[:, slices["last4"]], pool_features(enc, imgs, "avg_last4"), atol=1e-5)
        grid = pool_features(enc, imgs, "grid_all")  # (2, 6 * 4 * 192)
        assert torch.allclose(whole_image(grid, 6, 192), feats, atol=1e-5)
        last1 = readouts(6, 4 * 192)["last1"]  # the last layer's 4 quadrant means
        assert torch.allclose(grid[:, last1].view(2, 4, 192).mean(1), feats[:, slices["last1"]], atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("val", ["24", "0"])  # 0: the data's own test split is the held-out draw
def test_readout__scores_every_layer_choice_of_a_run_and_of_random_init(tmp_path, val):
    data = _tiny_npz(tmp_path / "tiny.npz")
    overrides = [*TINY, "meta.depth=2", f"data.dataset={data}", f"logging.folder={tmp_path / 'run'}"]
    fit(
        load_config(recipe_path("demo"), [*overrides, "optimization.epochs=1", "optimization.warmup=0"]), progress=False
    )
    cmd = [sys.executable, str(REPO / "bench" / "readout.py"), "--data", str(data), "--val", val]
    cmd += ["--run", str(tmp_path / "run"), "--out", str(tmp_path / "readout")]
    res = json.loads(subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout)
    (scores,) = res["runs"].values()
    for rows in (scores, res["random_init"]):
        assert set(rows) == {"last1", "all2", "grid_last1", "grid_all2"}
        for row in rows.values():
            assert set(row) == {"linear", "knn", "knn_standardised"} and all(0 <= v <= 1 for v in row.values())
    assert (tmp_path / "readout" / "val.npz").exists() == (val != "0")  # only a carve writes a split
    assert res["cpu"]["name"] and set(res["cpu"]["flags"]) == {"avx2", "avx512f", "avx512_bf16", "amx"}
