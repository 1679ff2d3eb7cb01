"""runner: raw-pixel baseline features, the feature cache through evaluate_encoder, label keys,
the regression task and probe input checks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import openjepa.evaluate.runner as runner
from openjepa.evaluate.results import ClassifierResult, EvalResult
from openjepa.evaluate.runner import (
    PIXELS,
    data_key,
    default_label_key,
    default_pooling,
    eval_datasets,
    evaluate_encoder,
    markdown_summary,
    pixel_features,
    pixel_features_from_datasets,
    run_probe,
)
from openjepa.models.registry import create_encoder


@pytest.fixture(autouse=True)
def _one_blas_thread():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def _write_npz(path: Path, n_train: int = 40, n_test: int = 12, size: int = 8, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    y_train, y_test = rng.integers(0, 4, n_train), rng.integers(0, 4, n_test)
    colours = rng.integers(0, 256, size=(4, 3))

    def images(y):
        x = colours[y][:, None, None, :] + rng.normal(0, 20, size=(len(y), size, size, 3))
        return np.clip(x, 0, 255).astype(np.uint8)

    np.savez(
        path,
        x_train=images(y_train),
        y_train=y_train.astype(np.uint8),
        x_test=images(y_test),
        y_test=y_test.astype(np.uint8),
        n_objects_train=y_train + 3,
        n_objects_test=y_test + 3,
    )
    return path


@pytest.fixture
def npz(tmp_path: Path) -> Path:
    return _write_npz(tmp_path / "d.npz")


def test_pixel_features_match_a_direct_pca_computation(npz):
    fit_on, k = 25, 10
    (f_tr, y_tr), (f_te, y_te) = pixel_features(str(npz), pca_dim=k, fit_on=fit_on)
    with np.load(npz) as d:
        x_tr = d["x_train"].reshape(40, -1).astype(np.float64)
        x_te = d["x_test"].reshape(12, -1).astype(np.float64)
        assert y_tr.tolist() == d["y_train"].tolist() and y_te.tolist() == d["y_test"].tolist()
    # PCA on the first `fit_on` train images only, by SVD of the centred prefix.
    mean = x_tr[:fit_on].mean(axis=0)
    _, _, vt = np.linalg.svd(x_tr[:fit_on] - mean, full_matrices=False)
    p_tr, p_te = (x_tr - mean) @ vt[:k].T, (x_te - mean) @ vt[:k].T
    mu, sd = p_tr.mean(axis=0), p_tr.std(axis=0)  # standardised with (all) train statistics
    ref_tr, ref_te = (p_tr - mu) / sd, (p_te - mu) / sd
    sign = np.sign((f_tr.numpy() * ref_tr).sum(axis=0))  # components are defined up to sign
    assert f_tr.shape == (40, k) and f_te.shape == (12, k) and f_tr.dtype == torch.float32
    np.testing.assert_allclose(f_tr.numpy() * sign, ref_tr, atol=2e-3)
    np.testing.assert_allclose(f_te.numpy() * sign, ref_te, atol=2e-3)


def test_pixel_features_prefix_and_component_cap(npz):
    (f_tr, _), (f_te, _) = pixel_features(str(npz), max_train=20, max_test=5)
    assert f_tr.shape == (20, 20) and f_te.shape == (5, 20)  # 100 components capped at 20 images
    train, test = eval_datasets(str(npz), 8, max_train=20)
    (g_tr, _), _ = pixel_features_from_datasets(train, test)
    torch.testing.assert_close(g_tr, f_tr)  # a Subset reads the same stored arrays


def test_pixel_features_of_non_array_datasets_go_through_the_transform():
    class Folderish(torch.utils.data.Dataset):  # no `.images`: like an image folder
        def __init__(self, n):
            self.x = torch.randn(n, 3, 4, 4, generator=torch.Generator().manual_seed(n))

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return self.x[i], i % 2

    (f_tr, y_tr), (f_te, _) = pixel_features_from_datasets(Folderish(12), Folderish(6), pca_dim=5)
    assert f_tr.shape == (12, 5) and f_te.shape == (6, 5) and y_tr.tolist() == [0, 1] * 6


def test_evaluate_pixels_caches_and_reports(npz, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    res = evaluate_encoder(PIXELS, str(npz), "knn", cache_dir=cache, pca_dim=4)
    assert res.pooling == "pca4" and res.pca_dim == 4 and res.probe.n_train == 40 and res.probe.n_test == 12
    assert res.top1 > 0.8  # 4 flat colours
    assert res.img_size is None and "img_size" not in res.to_dict() and res.to_dict()["pca_fit_on"] == 40
    assert len(list(cache.glob("*.pt"))) == 2

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(runner, "pixel_features_from_datasets", boom)
    again = evaluate_encoder(PIXELS, str(npz), "knn", cache_dir=cache, pca_dim=4)
    assert again.top1 == res.top1
    with pytest.raises(AssertionError, match="recomputed"):  # other settings, other entry
        evaluate_encoder(PIXELS, str(npz), "knn", cache_dir=cache, pca_dim=3)
    with pytest.raises(ValueError, match="patch tokens"):
        evaluate_encoder(PIXELS, str(npz), "attentive")
    with pytest.raises(ValueError, match="pooling"):
        evaluate_encoder(PIXELS, str(npz), "knn", pooling="avg_last4")
    with pytest.raises(ValueError, match="pseudo-encoder"):
        evaluate_encoder("pixelz", str(npz), "knn")


def test_evaluate_encoder_cache_skips_extraction(npz, tmp_path, monkeypatch):
    torch.manual_seed(0)
    enc = create_encoder("vit_tiny", patch_size=4, img_size=8, depth=1)
    cache = tmp_path / "cache"
    first = evaluate_encoder(enc, str(npz), "linear", cache_dir=cache, progress=False)
    assert len(list(cache.glob("*.pt"))) == 2 and first.img_size == 8

    calls = []
    monkeypatch.setattr(runner, "extract_features", lambda *a, **k: calls.append(1))
    second = evaluate_encoder(enc, str(npz), "linear", cache_dir=cache, progress=False)
    assert calls == [] and second.top1 == first.top1

    # New data in the same file: size/mtime enter the key, so the stale entry is not served.
    _write_npz(npz, seed=1)
    os.utime(npz, ns=(1, 1))
    monkeypatch.setattr(runner, "extract_features", lambda *a, **k: (_ for _ in ()).throw(AssertionError("miss")))
    with pytest.raises(AssertionError, match="miss"):
        evaluate_encoder(enc, str(npz), "linear", cache_dir=cache, progress=False)


def test_default_pooling__small_encoders_read_all_layers_deeper_ones_the_papers_readout(npz):
    shallow = create_encoder("vit_tiny", patch_size=4, img_size=8, depth=6)
    deep = create_encoder("vit_tiny", patch_size=4, img_size=8, depth=7)
    assert [default_pooling(t, shallow) for t in ("linear", "knn", "lowshot", "attentive")] == [
        *["avg_all"] * 3,
        "patch",
    ]
    assert [default_pooling(t, deep) for t in ("linear", "knn", "attentive")] == ["avg", "avg", "patch"]
    res = evaluate_encoder(shallow, str(npz), "knn", progress=False)
    assert res.pooling == "avg_all"  # what ran is recorded, so a result says what it read


def test_data_key_and_default_label_key(npz, tmp_path):
    assert data_key("shapes:10") == ("shapes:10",)
    key = data_key(str(npz))
    assert key[0] == str(npz) and len(key) == 3 and data_key(f"npz:{npz}")[1:] == key[1:]
    assert default_label_key(str(npz), "regression") == "n_objects"
    assert default_label_key(str(npz), "linear") is None
    assert default_label_key("shapes:10", "regression") is None
    np.savez(
        tmp_path / "plain.npz",
        x_train=np.zeros((2, 4, 4, 3), np.uint8),
        y_train=np.zeros(2, np.uint8),
        x_test=np.zeros((2, 4, 4, 3), np.uint8),
        y_test=np.zeros(2, np.uint8),
    )
    assert default_label_key(str(tmp_path / "plain.npz"), "regression") is None


def test_regression_task_reads_counts():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, generator=g)
    x = torch.randn(120, 16, generator=g)
    counts = (x @ w).round().clamp(-20, 20).long()
    res = run_probe("regression", (x[:100], counts[:100]), (x[100:], counts[100:]))
    assert res.top1 == res.rounded_acc > 0.8 and res.r2 > 0.95
    assert res.n_train == 100 and res.n_test == 20


def test_run_probe_checks_feature_rank_and_task():
    pooled = (torch.randn(8, 4), torch.arange(8) % 2)
    tokens = (torch.randn(8, 3, 4), torch.arange(8) % 2)
    with pytest.raises(ValueError, match="patch tokens"):
        run_probe("attentive", pooled, pooled)
    with pytest.raises(ValueError, match="pooled features"):
        run_probe("knn", tokens, tokens)
    with pytest.raises(ValueError, match="unknown evaluation task"):
        run_probe("nope", pooled, pooled)


def _eval_result(**kw) -> EvalResult:
    probe = ClassifierResult(top1=0.5, top5=0.75, n_train=3, n_test=2)
    return EvalResult(
        **{"task": "attentive", "pooling": "patch", "data": "shapes:5", "probe": probe, "seconds": 1.25, **kw}
    )


def test_eval_result_json_keys_in_cli_order():
    res = _eval_result(img_size=32, label_key="dist", checkpoint="run/", encoder="target")
    assert res.to_dict() == {
        "checkpoint": "run/",
        "encoder": "target",
        "task": "attentive",
        "pooling": "patch",
        "data": "shapes:5",
        "img_size": 32,
        "top1": 0.5,
        "top5": 0.75,
        "n_train": 3,
        "n_test": 2,
        "label_key": "dist",
        "seconds": 1.25,
    }
    assert list(res.to_dict()) == [
        "checkpoint",
        "encoder",
        "task",
        "pooling",
        "data",
        "img_size",
        "top1",
        "top5",
        "n_train",
        "n_test",
        "label_key",
        "seconds",
    ]
    assert (res.top1, res.top5) == (0.5, 0.75)
    assert list(_eval_result(pca_dim=6, pca_fit_on=40).to_dict())[:5] == [
        "task",
        "pooling",
        "data",
        "pca_dim",
        "pca_fit_on",
    ]


def test_markdown_summary_row():
    table = markdown_summary([_eval_result(checkpoint="pixels", encoder="pixels")])
    lines = table.splitlines()
    assert len(lines) == 3 and lines[0].startswith("| task |")
    assert lines[2] == "| attentive | shapes:5 | pixels | pixels | patch | 0.5000 | 0.7500 | 3 | 2 | 1.25 |"
    assert "| shapes:5 |  | " in markdown_summary([_eval_result()])  # no checkpoint given: an empty cell
