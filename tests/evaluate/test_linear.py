"""Linear probe: beats chance, agrees with sklearn, the batched sweep equals separate runs."""

import pytest
import torch

from openjepa.evaluate import DEFAULT_LRS, DEFAULT_WDS, linear_probe, logistic_regression_probe
from openjepa.evaluate.linear import _train_heads

from ._synthetic import make_blobs


@pytest.fixture(scope="module")
def separable():
    return (*make_blobs(500, seed=0), *make_blobs(250, seed=1))


@pytest.fixture(scope="module")
def overlapping():
    # Hard enough (about 80% top-1) that agreeing with sklearn is not automatic.
    return (*make_blobs(1000, sep=2.2, seed=0), *make_blobs(1000, sep=2.2, seed=1))


def test_linear_probe_beats_chance_on_separable_blobs(separable):
    res = linear_probe(*separable, epochs=30)
    assert res.top1 > 0.95  # chance is 0.2
    assert res.val_top1 > 0.9
    assert res.top5 is None  # 5 classes
    assert (res.n_train, res.n_test) == (500, 250)
    assert len(res.sweep) == 12
    assert {(p.lr, p.wd) for p in res.sweep} == {(lr, wd) for lr in DEFAULT_LRS for wd in DEFAULT_WDS}
    best = next(p for p in res.sweep if (p.lr, p.wd) == (res.best_lr, res.best_wd))
    assert best.val_top1 == res.val_top1 == max(p.val_top1 for p in res.sweep)
    # The JSON form `openjepa eval` writes: these keys, in this order.
    out = res.to_dict()
    assert list(out) == ["top1", "val_top1", "best_lr", "best_wd", "n_train", "n_test", "refit", "sweep"]
    assert out["sweep"][0] == {
        "lr": res.sweep[0].lr,
        "wd": res.sweep[0].wd,
        "val_top1": res.sweep[0].val_top1,
        "val_loss": res.sweep[0].val_loss,
    }


def test_linear_probe_matches_sklearn_on_the_same_objective(overlapping):
    # Coupled weight decay wd on the mean loss is sklearn's C = 1 / (n_train * wd).
    n, wd = len(overlapping[1]), 1e-3
    ours = linear_probe(*overlapping, lrs=(0.3,), wds=(wd,), val_fraction=0.0)
    ref = logistic_regression_probe(*overlapping, C=1.0 / (n * wd))
    assert 0.6 < ref.top1 < 0.95
    assert abs(ours.top1 - ref.top1) <= 0.015
    assert ours.sweep == () and ours.val_top1 != ours.val_top1  # no validation split: NaN


def test_default_sweep_within_three_points_of_sklearn_tuned_over_C(overlapping):
    ours = linear_probe(*overlapping)
    ref = max(logistic_regression_probe(*overlapping, C=C).top1 for C in (0.01, 0.1, 1.0))
    assert abs(ours.top1 - ref) <= 0.03


def test_linear_probe_batchnorm_and_no_refit_variants(overlapping):
    ref = logistic_regression_probe(*overlapping).top1
    bn = linear_probe(*overlapping, batchnorm=True, epochs=30)
    reuse = linear_probe(*overlapping, refit=False, epochs=30)
    assert abs(bn.top1 - ref) <= 0.05
    assert abs(reuse.top1 - ref) <= 0.05
    assert reuse.refit is False and reuse.to_dict()["refit"] is False


def test_linear_probe_is_deterministic_and_remaps_labels(separable):
    xtr, ytr, xte, yte = separable
    a = linear_probe(xtr, ytr + 3, xte, yte + 3, epochs=10)  # labels 3..7, like Clevr counts
    b = linear_probe(xtr, ytr + 3, xte, yte + 3, epochs=10)
    assert a == b
    assert a.top1 > 0.95


def test_linear_probe_top5_when_more_than_five_classes():
    xtr, ytr = make_blobs(400, num_classes=8, seed=0)
    xte, yte = make_blobs(160, num_classes=8, seed=1)
    res = linear_probe(xtr, ytr, xte, yte, epochs=20, lrs=(0.1,), wds=(0.0, 1e-3))
    assert res.top5 >= res.top1 > 0.9
    assert list(res.to_dict())[:2] == ["top1", "top5"]


def test_batched_sweep_equals_training_each_head_alone():
    x, y = make_blobs(300, sep=2.0, seed=3)
    x = (x - x.mean(0)) / x.std(0)
    lrs = torch.tensor([0.05, 0.5, 0.05])
    wds = torch.tensor([0.0, 1e-3, 1e-2])
    kw = dict(epochs=3, batch_size=64, momentum=0.9, seed=5)
    for bn in (False, True):
        together = _train_heads(x, y, 5, lrs, wds, batchnorm=bn, **kw)
        wide = together.logits(x)  # (n, H, C)
        for h in range(3):
            alone = _train_heads(x, y, 5, lrs[h : h + 1], wds[h : h + 1], batchnorm=bn, **kw)
            torch.testing.assert_close(wide[:, h], alone.logits(x)[:, 0], atol=1e-5, rtol=1e-5)


def test_logistic_regression_probe_beats_chance(separable):
    res = logistic_regression_probe(*separable, C=0.5)
    assert res.top1 > 0.95 and res.top5 is None
    assert res.to_dict() == {"top1": res.top1, "n_train": 500, "n_test": 250, "C": 0.5}


def test_sweep_without_validation_split_is_rejected(separable):
    with pytest.raises(ValueError):
        linear_probe(*separable, val_fraction=0.0)
    res = linear_probe(*separable, val_fraction=0.0, lrs=(0.1,), wds=(0.0,), epochs=5)
    assert res.top1 > 0.95
