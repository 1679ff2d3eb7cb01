"""Low-shot: class-balanced, seeded subsets and logistic regression on them."""

import pytest
import torch

from openjepa.evaluate import class_balanced_subset, lowshot_eval

from ._synthetic import make_blobs


@pytest.mark.parametrize("k", [1, 2, 5])
def test_shot_subsets_have_exactly_k_per_class(k):
    _, y = make_blobs(200, seed=0)
    idx = class_balanced_subset(y, shots=k, seed=0)
    assert len(idx) == len(set(idx.tolist())) == 5 * k
    assert torch.bincount(y[idx], minlength=5).tolist() == [k] * 5


def test_subsets_are_reproducible_per_seed_and_differ_across_seeds():
    _, y = make_blobs(500, seed=0)
    a = class_balanced_subset(y, shots=5, seed=1)
    assert torch.equal(a, class_balanced_subset(y, shots=5, seed=1))
    assert not torch.equal(a, class_balanced_subset(y, shots=5, seed=2))


def test_fraction_subset_takes_that_fraction_of_each_class():
    y = torch.cat([torch.full((300,), 0), torch.full((100,), 1), torch.full((20,), 2)])
    idx = class_balanced_subset(y, fraction=0.1, seed=0)
    assert torch.bincount(y[idx]).tolist() == [30, 10, 2]
    idx = class_balanced_subset(y, fraction=0.01, seed=0)
    assert torch.bincount(y[idx]).tolist() == [3, 1, 1]  # at least one per class


def test_too_few_examples_for_the_shots_raises():
    y = torch.tensor([0, 0, 0, 1])
    with pytest.raises(ValueError):
        class_balanced_subset(y, shots=2, seed=0)


def test_lowshot_eval_beats_chance_and_reports_mean_std_per_setting():
    xtr, ytr = make_blobs(1000, seed=0)
    xte, yte = make_blobs(300, seed=1)
    res = lowshot_eval(xtr, ytr, xte, yte, fractions=(0.01,), shots=(1, 5), seeds=(0, 1, 2))
    settings = res.settings
    assert list(settings) == ["1%", "1-shot", "5-shot"]
    assert settings["1%"].n_train == 10 and settings["5-shot"].n_train == 25
    for setting in settings.values():
        assert len(setting.per_seed) == 3
        assert setting.mean > 0.6  # chance is 0.2
        assert setting.mean == pytest.approx(sum(setting.per_seed) / 3)
        assert setting.std >= 0.0
    assert settings["5-shot"].mean > 0.9
    assert res.top1 == settings["1%"].mean and res.top5 is None  # the paper's 1% is the headline
    assert (res.n_train, res.n_test) == (1000, 300)
    out = res.to_dict()
    assert list(out) == ["settings", "top1", "n_train", "n_test"]
    assert out["settings"]["1-shot"] == {
        "mean": settings["1-shot"].mean,
        "std": settings["1-shot"].std,
        "per_seed": list(settings["1-shot"].per_seed),
        "n_train": 5,
    }
    one_shot = lowshot_eval(xtr, ytr, xte, yte, fractions=(), shots=(1,))
    assert one_shot == lowshot_eval(xtr, ytr, xte, yte, fractions=(), shots=(1,))
    assert one_shot.top1 == one_shot.settings["1-shot"].mean == settings["1-shot"].mean
    with pytest.raises(ValueError, match="at least one"):
        lowshot_eval(xtr, ytr, xte, yte, fractions=(), shots=())
