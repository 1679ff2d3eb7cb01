"""Ridge regression probe on a linearly decodable count."""

import torch

from openjepa.evaluate import regression_probe


def test_regression_probe_recovers_a_linear_count():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(32, generator=g)

    def make(n):
        count = torch.randint(3, 11, (n,), generator=g).float()  # Clevr-like 3..10 objects
        x = torch.randn(n, 32, generator=g)
        x = x + 4 * (count[:, None] - 6.5) * w / w.norm()  # count decodable along w, noise std 1
        return x, count

    (xtr, vtr), (xte, vte) = make(600), make(300)
    res = regression_probe(xtr, vtr, xte, vte)
    assert res.r2 > 0.95
    assert res.mae < 0.5
    assert res.rounded_acc > 0.6  # chance is 1/8
    assert res.top1 == res.rounded_acc and res.top5 is None  # the count accuracy is the headline
    assert res.rmse >= res.mae and res.alpha > 0 and (res.n_train, res.n_test) == (600, 300)
    assert list(res.to_dict()) == ["mae", "rmse", "r2", "rounded_acc", "alpha", "n_train", "n_test", "top1"]
