"""The demo's neighbour agreement: the share of each test image's k nearest train images with its label."""

import torch
import torch.nn.functional as F

from openjepa.demo.figures import neighbour_agreement


def _brute_force(
    test_n: torch.Tensor, test_y: torch.Tensor, train_n: torch.Tensor, train_y: torch.Tensor, k: int
) -> float:
    hits = 0
    for x, y in zip(test_n, test_y):
        sims = [(float(x @ t), int(lab)) for t, lab in zip(train_n, train_y)]
        hits += sum(lab == int(y) for _, lab in sorted(sims, reverse=True)[:k])
    return hits / (len(test_n) * k)


def test_agreement_matches_brute_force_across_chunks():
    g = torch.Generator().manual_seed(0)
    train_y, test_y = torch.randint(0, 3, (60,), generator=g), torch.randint(0, 3, (25,), generator=g)
    centres = torch.randn(3, 8, generator=g)
    # Noisy class clusters: agreement well between chance (1/3) and 1, so both ends would be caught.
    train_n = F.normalize(centres[train_y] + 0.9 * torch.randn(60, 8, generator=g), dim=-1)
    test_n = F.normalize(centres[test_y] + 0.9 * torch.randn(25, 8, generator=g), dim=-1)
    got = neighbour_agreement(test_n, test_y, train_n, train_y, k=5, chunk=7)  # 7 does not divide 25
    assert abs(got - _brute_force(test_n, test_y, train_n, train_y, 5)) < 1e-9
    assert 0.4 < got < 0.99


def test_agreement_is_one_for_separated_classes_and_low_for_shuffled_labels():
    train_y = torch.arange(40) % 4
    feats = F.normalize(
        torch.eye(4)[train_y] + 0.01 * torch.randn(40, 4, generator=torch.Generator().manual_seed(1)), dim=-1
    )
    assert neighbour_agreement(feats, train_y, feats, train_y, k=5) == 1.0
    shuffled = train_y[torch.randperm(40, generator=torch.Generator().manual_seed(2))]
    assert neighbour_agreement(feats, train_y, feats, shuffled, k=5) < 0.6
