"""Linear probes on frozen features: a batched lr x wd sweep trained in one pass, and sklearn's
logistic regression as the classic baseline.

The sweep trains every (lr, wd) head at once as one wide linear layer: all heads see the same
minibatches, the forward is a single (B, D) @ (D, H*C) matmul and the softmax-cross-entropy
gradient is written out by hand, so H heads cost little more than one. The problem is convex, so
heads start at zero and the result depends on the seed only through minibatch order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from itertools import product
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ._common import as_numpy, as_tensor, encode_labels, stratified_split
from .metrics import headline_accuracy
from .results import LinearResult, LogisticResult, SweepPoint

# SGD + Nesterov momentum 0.9 + cosine decay, on standardised features. The weight decay is the
# coupled (L2) kind, i.e. a mean-cross-entropy + wd/2 ||W||^2 objective, the same family as
# sklearn's C = 1 / (n_train * wd). The paper's IN-1K recipe sweeps lr {0.001, 0.01, 0.05} and
# wd {0, 5e-4} with LARS at batch 16384; with standardised features and batch 256 the useful lrs
# are larger, and small data sets need more regularisation than ImageNet, so the grid is wider.
DEFAULT_LRS: tuple[float, ...] = (0.01, 0.1, 1.0)
DEFAULT_WDS: tuple[float, ...] = (0.0, 1e-4, 1e-3, 1e-2)
BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def _standardiser(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = x.mean(dim=0)
    std = x.std(dim=0)
    # Constant features would divide by ~0 and blow up on test points; leave them unscaled.
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return mean, std


class _Heads:
    """H linear heads over C classes stored as one (D, H*C) matrix, with optional shared BN stats."""

    def __init__(self, dim: int, num_heads: int, num_classes: int, batchnorm: bool, device: torch.device) -> None:
        self.H, self.C = num_heads, num_classes
        self.W = torch.zeros(dim, num_heads * num_classes, device=device)
        self.b = torch.zeros(num_heads * num_classes, device=device)
        # BatchNorm1d(affine=False) has no parameters and its input is the same for every head, so
        # one set of batch / running statistics is exactly what H separate BN layers would compute.
        self.bn = batchnorm
        self.run_mean = torch.zeros(dim, device=device)
        self.run_var = torch.ones(dim, device=device)

    def _bn_train(self, xb: torch.Tensor) -> torch.Tensor:
        mean, var = xb.mean(dim=0), xb.var(dim=0, unbiased=False)
        n = xb.shape[0]
        self.run_mean.lerp_(mean, BN_MOMENTUM)
        self.run_var.lerp_(var * n / max(n - 1, 1), BN_MOMENTUM)  # running var is unbiased, as in torch
        return (xb - mean) / torch.sqrt(var + BN_EPS)

    def logits(self, x: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
        """(n, H, C) eval-mode logits, computed in chunks to bound memory."""
        outs = []
        for s in range(0, x.shape[0], chunk):
            xb = x[s : s + chunk]
            if self.bn:
                xb = (xb - self.run_mean) / torch.sqrt(self.run_var + BN_EPS)
            outs.append((xb @ self.W + self.b).view(-1, self.H, self.C))
        return torch.cat(outs) if outs else x.new_zeros(0, self.H, self.C)


def _train_heads(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    lrs: torch.Tensor,
    wds: torch.Tensor,
    *,
    epochs: int,
    batch_size: int | None,
    batchnorm: bool,
    momentum: float,
    seed: int,
) -> _Heads:
    n, dim = x.shape
    H, C = len(lrs), num_classes
    heads = _Heads(dim, H, C, batchnorm, x.device)
    lr_col = lrs.repeat_interleave(C).to(x.device)  # per output column of the wide layer
    wd_col = wds.repeat_interleave(C).to(x.device)
    vW, vb = torch.zeros_like(heads.W), torch.zeros_like(heads.b)
    bs = n if not batch_size or batch_size >= n else int(batch_size)
    # Drop the ragged last batch (reshuffled every epoch, so no example is always left out): a tiny
    # batch would give noisy BN statistics and an outsized step.
    steps = n // bs
    total = max(epochs * steps, 1)
    gen = torch.Generator().manual_seed(int(seed))
    onehot = F.one_hot(y, C).to(x.dtype)
    t = 0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen).to(x.device)
        # One gather per epoch, then contiguous slices: cheaper than a gather per step.
        x_ep, t_ep = x[perm], onehot[perm]
        for s in range(steps):
            xb, tb = x_ep[s * bs : (s + 1) * bs], t_ep[s * bs : (s + 1) * bs]
            if batchnorm:
                xb = heads._bn_train(xb)
            logits = (xb @ heads.W + heads.b).view(bs, H, C)
            # d(mean CE)/d(logits) = (softmax - onehot) / B, for every head at once. The softmax is
            # spelled out because torch.softmax over a short last axis is ~3x slower on CPU.
            p = (logits - logits.amax(dim=-1, keepdim=True)).exp_()
            p.div_(p.sum(dim=-1, keepdim=True))
            g = p.sub_(tb[:, None, :]).div_(bs).view(bs, H * C)
            gW = xb.T @ g + wd_col * heads.W  # coupled L2 decay on weights only, not biases
            gb = g.sum(dim=0)
            lr_t = lr_col * (0.5 * (1.0 + math.cos(math.pi * t / total)))
            vW.mul_(momentum).add_(gW)
            vb.mul_(momentum).add_(gb)
            # Nesterov: step along g + momentum * v.
            heads.W.sub_(lr_t * (gW + momentum * vW))
            heads.b.sub_(lr_t * (gb + momentum * vb))
            t += 1
    return heads


@dataclass
class _Fitted:
    """Heads trained on standardised features, with the statistics to standardise new inputs."""

    heads: _Heads
    mean: torch.Tensor
    std: torch.Tensor

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(n, H, C) eval-mode logits of raw features."""
        return self.heads.logits((x - self.mean) / self.std)


def _fit(
    x: torch.Tensor,
    y: torch.Tensor,
    configs: list[tuple[float, float]],
    num_classes: int,
    standardize: bool,
    train_kw: dict[str, Any],
) -> _Fitted:
    """One head per (lr, wd) in `configs`, trained on `x` standardised with its own statistics."""
    mean, std = _standardiser(x) if standardize else (x.new_zeros(1), x.new_ones(1))
    lr_t = torch.tensor([c[0] for c in configs])
    wd_t = torch.tensor([c[1] for c in configs])
    return _Fitted(_train_heads((x - mean) / std, y, num_classes, lr_t, wd_t, **train_kw), mean, std)


def _select(
    x: torch.Tensor,
    y: torch.Tensor,
    grid: list[tuple[float, float]],
    val_fraction: float,
    seed: int,
    fit: Callable[..., _Fitted],
) -> tuple[int, float, tuple[SweepPoint, ...], _Fitted | None]:
    """Pick the (lr, wd) of `grid` with the best validation top-1 (ties: lower validation loss).

    Returns (index into grid, its validation top-1, the sweep, the heads trained on the fitting
    split). Without a validation split a one-point grid is its own choice (NaN top-1, no heads).
    """
    if val_fraction <= 0:
        if len(grid) == 1:
            return 0, float("nan"), (), None
        raise ValueError("a sweep over several (lr, wd) needs val_fraction > 0 to select one")
    fit_idx, val_idx = stratified_split(y.cpu(), val_fraction, seed)
    if len(val_idx) == 0:
        raise ValueError("val_fraction too small: the validation split is empty")
    fit_idx, val_idx = fit_idx.to(x.device), val_idx.to(x.device)
    fitted = fit(x[fit_idx], y[fit_idx], grid)
    val_logits = fitted.logits(x[val_idx])  # (n_val, H, C)
    y_val = y[val_idx]
    val_acc = (val_logits.argmax(dim=-1) == y_val[:, None]).float().mean(dim=0)
    val_loss = torch.stack([F.cross_entropy(val_logits[:, h], y_val) for h in range(len(grid))])
    sweep = tuple(
        SweepPoint(lr, wd, acc, loss) for (lr, wd), acc, loss in zip(grid, val_acc.tolist(), val_loss.tolist())
    )
    best = max(range(len(grid)), key=lambda h: (val_acc[h].item(), -val_loss[h].item()))
    return best, val_acc[best].item(), sweep, fitted


def linear_probe(
    train_f: Any,
    train_y: Any,
    test_f: Any,
    test_y: Any,
    *,
    val_fraction: float = 0.1,
    lrs: Sequence[float] = DEFAULT_LRS,
    wds: Sequence[float] = DEFAULT_WDS,
    epochs: int = 100,
    batch_size: int | None = 256,
    batchnorm: bool = False,
    standardize: bool = True,
    refit: bool = True,
    momentum: float = 0.9,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> LinearResult:
    """Linear (optionally BN + linear) probe with an lr x wd sweep trained in one pass; top-1 in 0..1.

    A stratified, seeded `val_fraction` of train selects (lr, wd) by validation top-1 (ties broken by
    lower validation cross-entropy). With `refit=True` (default) the selected (lr, wd) is then
    retrained on ALL of train (new standardisation statistics included) and that head is tested;
    with `refit=False` the selected sweep head is tested as is. Features are standardised with the
    statistics of the data each head is trained on. `batch_size=None` means full batch.
    """
    dev = torch.device(device)
    x_all = as_tensor(train_f).to(dev, torch.float32)
    x_test = as_tensor(test_f).to(dev, torch.float32)
    if x_all.ndim != 2 or x_test.ndim != 2:
        raise ValueError("linear_probe expects pooled (N, D) features")
    y_all, y_test, classes = encode_labels(train_y, test_y)
    assert y_test is not None  # test_y was given
    y_all, y_test = y_all.to(dev), y_test.to(dev)
    C = len(classes)
    grid = list(product([float(v) for v in lrs], [float(v) for v in wds]))
    if not grid:
        raise ValueError("empty lr / wd sweep")
    fit = partial(
        _fit,
        num_classes=C,
        standardize=standardize,
        train_kw={
            "epochs": epochs,
            "batch_size": batch_size,
            "batchnorm": batchnorm,
            "momentum": momentum,
            "seed": seed,
        },
    )
    best, best_val, sweep, fitted = _select(x_all, y_all, grid, val_fraction, seed, fit)
    head_index = best
    if fitted is None or refit:
        fitted, head_index = fit(x_all, y_all, [grid[best]]), 0
    top1, top5 = headline_accuracy(fitted.logits(x_test)[:, head_index], y_test, C)
    return LinearResult(
        top1=top1,
        top5=top5,
        val_top1=best_val,
        best_lr=grid[best][0],
        best_wd=grid[best][1],
        n_train=int(x_all.shape[0]),
        n_test=int(x_test.shape[0]),
        refit=bool(refit),
        sweep=sweep,
    )


def logistic_regression_probe(
    train_f: Any,
    train_y: Any,
    test_f: Any,
    test_y: Any,
    C: float = 1.0,
    max_iter: int = 1000,
    standardize: bool = True,
) -> LogisticResult:
    """scikit-learn multinomial L2 LogisticRegression (lbfgs) on standardised features; top-1 in 0..1.

    Standardisation uses train statistics.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x_tr, x_te = as_numpy(train_f).astype(np.float64), as_numpy(test_f).astype(np.float64)
    y_tr, y_te, classes = encode_labels(train_y, test_y)
    if standardize:
        scaler = StandardScaler().fit(x_tr)
        x_tr, x_te = scaler.transform(x_tr), scaler.transform(x_te)
    n_classes = len(classes)
    if n_classes < 2:
        # sklearn refuses one-class fits; the only possible prediction is that class.
        scores = torch.ones(x_te.shape[0], 1)
    else:
        clf = LogisticRegression(C=C, max_iter=max_iter)
        clf.fit(x_tr, y_tr.numpy())
        # clf.classes_ is 0..n_classes-1 here because labels were encoded from the same train set.
        scores = torch.from_numpy(clf.decision_function(x_te)).reshape(x_te.shape[0], -1)
        if n_classes == 2:  # binary decision_function is one column: logit of class 1
            scores = torch.cat([torch.zeros_like(scores), scores], dim=1)
    top1, top5 = headline_accuracy(scores, y_te, n_classes)
    return LogisticResult(top1=top1, top5=top5, n_train=int(x_tr.shape[0]), n_test=int(x_te.shape[0]), C=C)
