"""Low-shot evaluation: logistic regression on frozen features from class-balanced label subsets.

The paper's ImageNet-1% setting keeps about 1% of the labelled images of each class (12-13 per
class). Here both "x% of each class" and "k images per class" subsets are drawn with fixed seeds,
and top-1 is reported as mean and std over seeds.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ._common import as_tensor
from .linear import logistic_regression_probe
from .results import LowShotResult, LowShotSetting


def class_balanced_subset(
    labels: Any, *, fraction: float | None = None, shots: int | None = None, seed: int = 0
) -> torch.Tensor:
    """Sorted indices of a seeded subset with `shots` per class, or round(fraction * n_c) (>= 1) per class.

    Exactly one of `fraction` / `shots` must be given. A class with fewer than `shots` examples
    raises ValueError rather than silently unbalancing the subset.
    """
    if (fraction is None) == (shots is None):
        raise ValueError("give exactly one of fraction= or shots=")
    labels = as_tensor(labels).reshape(-1)
    gen = torch.Generator().manual_seed(int(seed))
    picked = []
    for c in torch.unique(labels):  # sorted, so the draw order (and result) is fixed per seed
        idx = torch.nonzero(labels == c).reshape(-1)
        if shots is not None:
            if len(idx) < shots:
                raise ValueError(f"class {c.item()} has {len(idx)} examples, fewer than shots={shots}")
            take = int(shots)
        else:
            assert fraction is not None  # exactly one of fraction / shots, checked above
            if not 0 < fraction <= 1:
                raise ValueError(f"fraction must be in (0, 1], got {fraction}")
            take = max(1, int(round(fraction * len(idx))))
        picked.append(idx[torch.randperm(len(idx), generator=gen)[:take]])
    return torch.cat(picked).sort().values


def _setting_name(fraction: float | None, shots: int | None) -> str:
    return f"{fraction * 100:g}%" if fraction is not None else f"{shots}-shot"


def lowshot_eval(
    train_f: Any,
    train_y: Any,
    test_f: Any,
    test_y: Any,
    *,
    fractions: Sequence[float] = (0.01,),
    shots: Sequence[int] = (1, 2, 5),
    seeds: Sequence[int] = (0, 1, 2),
    C: float = 1.0,
    max_iter: int = 1000,
) -> LowShotResult:
    """Top-1 (0..1) of logistic regression trained on seeded class-balanced subsets of train.

    One setting per fraction ("1%") and per shot count ("1-shot"), each with the mean and sample
    std (ddof=1; 0 for one seed) over seeds. Features are standardised with the subset's own
    statistics, so no label-free statistics of the full train set leak in. C=1.0 is sklearn's
    default; the strong implicit regularisation of so few examples makes it a reasonable fixed
    choice, as no labels are spare for selecting it.
    """
    train_f = as_tensor(train_f)
    train_y = as_tensor(train_y).reshape(-1)
    settings = [(float(f), None) for f in fractions] + [(None, int(k)) for k in shots]
    if not settings:
        raise ValueError("lowshot_eval needs at least one fraction or shot count")
    out: dict[str, LowShotSetting] = {}
    for fraction, k in settings:
        accs, sizes = [], []
        for seed in seeds:
            idx = class_balanced_subset(train_y, fraction=fraction, shots=k, seed=seed)
            res = logistic_regression_probe(train_f[idx], train_y[idx], test_f, test_y, C=C, max_iter=max_iter)
            accs.append(res.top1)
            sizes.append(len(idx))
        arr = np.asarray(accs, dtype=np.float64)
        out[_setting_name(fraction, k)] = LowShotSetting(
            mean=float(arr.mean()),
            std=float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
            per_seed=tuple(accs),
            n_train=sizes[0],
        )
    return LowShotResult(settings=out, n_train=len(train_f), n_test=len(test_f))
