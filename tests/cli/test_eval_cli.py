"""`openjepa eval` and `openjepa extract`, called in-process on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from openjepa.cli.main import main

from .conftest import TINY

KEYS = {"task", "checkpoint", "encoder", "pooling", "top1", "n_train", "n_test", "seconds"}


def _eval(tmp_path: Path, task: str, data: str, *extra: str, checkpoint: list[str] | None = None) -> dict:
    out = tmp_path / f"{task}.json"
    rc = main(["-q", "eval", task, *(checkpoint or TINY), "--data", data, "--out", str(out), *extra])
    assert rc == 0
    return json.loads(out.read_text())


def _check(res: dict, task: str, n_train: int, n_test: int, top5: bool) -> None:
    assert KEYS <= set(res)
    assert res["task"] == task and res["checkpoint"] == "random:vit_tiny" and res["encoder"] == "random"
    # the CLI encoder has 1 block: pooled probes read all its layers by default (default_pooling)
    assert res["pooling"] == ("patch" if task == "attentive" else "avg_all")
    assert (res["n_train"], res["n_test"]) == (n_train, n_test)
    assert 0.0 <= res["top1"] <= 1.0 and res["seconds"] >= 0
    assert ("top5" in res) == top5
    if top5:
        assert res["top1"] <= res["top5"] <= 1.0


@pytest.mark.parametrize("task", ["knn", "linear", "lowshot", "attentive"])
def test_eval_each_task_on_shapes(tmp_path, capsys, task):
    res = _eval(tmp_path, task, "shapes:200")
    _check(res, task, 200, 50, top5=False)  # shapes has 4 classes: no top5
    printed = capsys.readouterr().out
    assert printed.startswith("| task |") and f"| {task} |" in printed  # the markdown summary


@pytest.mark.parametrize("task", ["knn", "linear", "lowshot", "attentive"])
def test_eval_each_task_on_npz(tmp_path, tiny_npz, task):
    res = _eval(tmp_path, task, str(tiny_npz))
    # 7 classes: top5 applies, except to low-shot, which reports top-1 (mean over seeds) as the paper does.
    _check(res, task, 56, 21, top5=task != "lowshot")
    if task in ("knn", "linear"):
        assert res["top1"] > 0.5  # flat colours are separable even for a random 1-block ViT


def test_eval_label_key_and_regression(tmp_path, tiny_npz):
    dist = _eval(tmp_path, "linear", str(tiny_npz), "--label-key", "dist")
    assert dist["label_key"] == "dist" and "top5" not in dist  # 3 dist classes
    reg = _eval(tmp_path, "regression", str(tiny_npz))
    assert reg["label_key"] == "n_objects"  # the raw counts, picked by default where the file has them
    assert {"mae", "rmse", "r2", "rounded_acc"} <= set(reg) and reg["top1"] == reg["rounded_acc"]
    assert 0.0 <= reg["top1"] <= 1.0 and reg["n_train"] == 56


def test_eval_pixels_baseline(tmp_path, tiny_npz):
    res = _eval(tmp_path, "linear", str(tiny_npz), checkpoint=["--checkpoint", "pixels"])
    assert res["encoder"] == "pixels" and res["checkpoint"] == "pixels"
    # PCA-100 is capped by the 56 train images; the first 40 are enough to fit it here.
    assert res["pooling"] == "pca56" and res["pca_dim"] == 56 and res["pca_fit_on"] == 56
    assert 0.0 <= res["top1"] <= 1.0 and "top5" in res
    # With the components capped to the colour signal (standardising 50 pure-noise components
    # would drown it with 56 train images) the classes separate.
    res = _eval(
        tmp_path, "knn", str(tiny_npz), "--pca-dim", "6", "--pca-fit-on", "40", checkpoint=["--checkpoint", "pixels"]
    )
    assert res["pooling"] == "pca6" and res["pca_fit_on"] == 40 and res["top1"] > 0.9


def test_eval_cache_second_run_reads_features(tmp_path, tiny_npz, monkeypatch):
    cache = tmp_path / "cache"
    first = _eval(tmp_path, "knn", str(tiny_npz), "--cache", str(cache))
    entries = sorted(cache.glob("*.pt"))
    assert len(entries) == 2  # train and test

    import openjepa.evaluate.runner as runner

    def no_extraction(*args, **kwargs):
        raise AssertionError("features were recomputed despite the cache")

    monkeypatch.setattr(runner, "extract_features", no_extraction)
    second = _eval(tmp_path, "knn", str(tiny_npz), "--cache", str(cache))
    assert second["top1"] == first["top1"] and sorted(cache.glob("*.pt")) == entries
    # Another pooling is another fingerprint: it must extract (and so hits the patched function).
    with pytest.raises(AssertionError, match="recomputed"):
        main(["-q", "eval", "knn", *TINY, "--data", str(tiny_npz), "--cache", str(cache), "--pooling", "avg_last4"])


@pytest.mark.parametrize("pooling,shape", [("avg", (192,)), ("patch", (64, 192))])
def test_extract_writes_features(tmp_path, tiny_npz, pooling, shape):
    out = tmp_path / "feats.npz"
    assert main(["-q", "extract", *TINY, "--data", str(tiny_npz), "--out", str(out), "--pooling", pooling]) == 0
    with np.load(out) as f:
        assert f["train_features"].shape == (56, *shape) and f["test_features"].shape == (21, *shape)
        assert f["train_labels"].shape == (56,) and f["test_labels"].shape == (21,)
        assert str(f["pooling"]) == pooling and str(f["checkpoint"]) == "random:vit_tiny"
        assert set(np.unique(f["train_labels"])) == set(range(7))


def test_extract_shapes_and_pixels(tmp_path):
    out = tmp_path / "shapes.npz"
    assert main(["-q", "extract", *TINY, "--data", "shapes:40", "--out", str(out)]) == 0
    with np.load(out) as f:
        assert f["train_features"].shape == (40, 192) and f["test_features"].shape == (10, 192)
    out = tmp_path / "pixels.npz"
    assert (
        main(
            [
                "-q",
                "extract",
                "--checkpoint",
                "pixels",
                "--data",
                "shapes:40",
                "--img-size",
                "16",
                "--pca-dim",
                "8",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    with np.load(out) as f:
        assert f["train_features"].shape == (40, 8) and f["test_features"].shape == (10, 8)
        assert str(f["encoder"]) == "pixels"


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["eval", "knn", *TINY, "--data", "{tmp}/missing.npz"], "not found"),
        (["eval", "knn", *TINY, "--data", "{tmp}/no_such_folder"], "bad dataset spec"),
        (["eval", "bogus", *TINY, "--data", "shapes:20"], "unknown task 'bogus'"),
        (["eval", "linear", *TINY, "--data", "{npz}", "--label-key", "nope"], "missing key"),
        (["eval", "knn", *TINY, "--data", "shapes:20", "--label-key", "nope"], "label_key"),
        (["eval", "attentive", "--checkpoint", "pixels", "--data", "{npz}"], "patch tokens"),
        (["eval", "knn", "--checkpoint", "random:vit_nope", "--data", "{npz}"], "unknown model"),
        (["eval", "knn", *TINY, "--data", "{npz}", "--max-train", "0"], "--max-train"),
        (["extract", *TINY, "--data", "{tmp}/missing.npz", "--out", "{tmp}/f.npz"], "not found"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(tmp_path, tiny_npz, capsys, argv, needle):
    argv = [a.format(tmp=tmp_path, npz=tiny_npz) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if not line.startswith("INFO ")]  # logging of the encoder load
    assert len(err) == 1, err
    assert err[0].startswith(f"openjepa {argv[0]}: error:") and needle in err[0]


def test_eval_saved_encoder_file_reports_target(tmp_path, tiny_npz):
    from openjepa.interop import load_encoder, save_encoder_safetensors

    enc = load_encoder("random:vit_tiny", patch_size=4, img_size=32, depth=1)
    path = save_encoder_safetensors(enc.state_dict(), enc.meta["arch"], tmp_path / "enc.safetensors", which="target")
    res = _eval(tmp_path, "knn", str(tiny_npz), checkpoint=["--checkpoint", str(path), "--no-progress"])
    assert res["checkpoint"] == str(path) and res["encoder"] == "target" and res["img_size"] == 32
    # The same weights as random:vit_tiny at depth 1 (seed 0): the same features, the same result.
    assert res["top1"] == _eval(tmp_path, "knn", str(tiny_npz))["top1"]
