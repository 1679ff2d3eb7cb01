"""Weighted cosine kNN: exact agreement with a brute-force reference, accuracy, k clipping."""

import math

import pytest
import torch

from openjepa.evaluate import knn_classify, knn_eval

from ._synthetic import make_blobs


def brute_force_knn(train_x, train_y, test_x, k, temperature, num_classes):
    """Loop over test points: explicit cosine sims, sort, explicit exp-weighted votes (float64)."""
    preds, probs = [], []
    tr = train_x.double().tolist()
    for q in test_x.double().tolist():
        qn = math.sqrt(sum(v * v for v in q))
        sims = []
        for j, row in enumerate(tr):
            rn = math.sqrt(sum(v * v for v in row))
            sims.append((sum(a * b for a, b in zip(q, row)) / (qn * rn), j))
        sims.sort(key=lambda s: -s[0])
        votes = [0.0] * num_classes
        for sim, j in sims[:k]:
            votes[int(train_y[j])] += math.exp(sim / temperature)
        total = sum(votes)
        probs.append([v / total for v in votes])
        preds.append(max(range(num_classes), key=lambda c: (votes[c], -c)))  # first max wins
    return torch.tensor(preds), torch.tensor(probs, dtype=torch.float64)


@pytest.mark.parametrize("k,temperature", [(1, 0.07), (7, 0.07), (15, 0.5)])
def test_knn_matches_brute_force_reference_exactly(k, temperature):
    # Overlapping blobs, so the neighbourhoods are mixed and the weights actually matter.
    train_x, train_y = make_blobs(120, sep=1.5, seed=0)
    test_x, _ = make_blobs(40, sep=1.5, seed=1)
    scores = knn_classify(train_x, train_y, test_x, k=k, temperature=temperature, batch_size=16)
    ref_pred, ref_probs = brute_force_knn(train_x, train_y, test_x, k, temperature, 5)
    assert torch.equal(scores.argmax(dim=1), ref_pred)
    torch.testing.assert_close(scores.double(), ref_probs, atol=1e-5, rtol=1e-4)


def test_knn_eval_beats_chance_and_agrees_with_knn_classify():
    train_x, train_y = make_blobs(300, seed=0)
    test_x, test_y = make_blobs(100, seed=1)
    res = knn_eval(train_x, train_y, test_x, test_y, ks=(10, 20))
    assert res.at(10).top1 > 0.9 and res.at(20).top1 > 0.9  # chance is 0.2
    assert res.at(10).top5 is None and res.top5 is None  # only 5 classes
    pred = knn_classify(train_x, train_y, test_x, k=20).argmax(dim=1)
    assert math.isclose(res.at(20).top1, (pred == test_y).float().mean().item())
    assert res.headline_k == 20 and res.top1 == res.at(20).top1  # DINO's k is the headline
    assert res.to_dict() == {
        "k10_top1": res.at(10).top1,
        "k20_top1": res.at(20).top1,
        "n_train": 300,
        "n_test": 100,
        "temperature": 0.07,
        "top1": res.at(20).top1,
    }
    with pytest.raises(KeyError):
        res.at(5)


def test_knn_k_larger_than_train_set_is_clipped():
    train_x, train_y = make_blobs(30, seed=0)
    test_x, test_y = make_blobs(20, seed=1)
    res = knn_eval(train_x, train_y, test_x, test_y, ks=(30, 1000))
    assert res.at(1000).top1 == res.at(30).top1
    assert res.headline_k == 30  # without k=20 the first k is the headline
    scores = knn_classify(train_x, train_y, test_x, k=1000)
    assert torch.equal(scores, knn_classify(train_x, train_y, test_x, k=30))


def test_knn_eval_reports_top5_for_more_than_five_classes_and_remaps_labels():
    train_x, train_y = make_blobs(400, num_classes=8, seed=0)
    test_x, test_y = make_blobs(80, num_classes=8, seed=1)
    res = knn_eval(train_x, train_y + 100, test_x, test_y + 100, ks=(10,))  # non-zero-based labels
    assert res.at(10).top1 > 0.8 and res.at(10).top5 >= res.at(10).top1
    assert list(res.to_dict()) == ["k10_top1", "k10_top5", "n_train", "n_test", "temperature", "top1", "top5"]


def test_knn_eval_counts_a_repeated_k_once():
    train_x, train_y = make_blobs(60, seed=0)
    test_x, test_y = make_blobs(30, seed=1)
    res = knn_eval(train_x, train_y, test_x, test_y, ks=(5, 5))
    assert [a.k for a in res.per_k] == [5] and 0.0 <= res.top1 <= 1.0
