"""Weighted cosine k-nearest-neighbour classification on frozen features, as in DINO's kNN eval.

Features are L2-normalised; each test point takes its k most cosine-similar train points, each of
which votes for its class with weight exp(similarity / temperature).
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F

from ._common import as_tensor, encode_labels
from .results import HEADLINE_K, KnnAccuracy, KnnResult


def _normalised(x: Any, device: torch.device | None) -> torch.Tensor:
    x = as_tensor(x)
    if x.ndim != 2:
        raise ValueError(f"kNN expects pooled (N, D) features, got shape {tuple(x.shape)}")
    return F.normalize(x.to(device=device, dtype=torch.float32), dim=1)


def _knn_votes(
    train_n: torch.Tensor,
    train_idx: torch.Tensor,
    test_n: torch.Tensor,
    ks: Sequence[int],
    temperature: float,
    num_classes: int,
    batch_size: int,
) -> Iterator[tuple[slice, dict[int, torch.Tensor]]]:
    """Yield (test rows, {k: (rows, C) normalised vote scores}) one chunk of test points at a time.

    The neighbours are found once for the largest k; smaller k reuse the first columns of the
    sorted top-k, so evaluating several k costs one similarity pass.
    """
    kmax = max(ks)
    for start in range(0, test_n.shape[0], batch_size):
        rows = slice(start, min(start + batch_size, test_n.shape[0]))
        sims = test_n[rows] @ train_n.T  # (b, n_train) cosine similarities
        top_sims, top_pos = sims.topk(kmax, dim=1, largest=True, sorted=True)
        top_labels = train_idx[top_pos]  # (b, kmax)
        weights = (top_sims / temperature).exp()
        out = {}
        for k in ks:
            votes = torch.zeros(top_labels.shape[0], num_classes, device=test_n.device)
            votes.scatter_add_(1, top_labels[:, :k], weights[:, :k])
            # Normalised to sum 1 per row; the division by a positive row constant keeps the ranking.
            out[k] = votes / votes.sum(dim=1, keepdim=True)
        yield rows, out


def knn_classify(
    train_feats: Any,
    train_labels: Any,
    test_feats: Any,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Class probabilities (n_test, C) from weighted cosine kNN; argmax is the prediction.

    train_labels are class ids 0..C-1 (C = max label + 1 unless `num_classes` is given); k is
    clipped to the train size. Runs on `device` (default: where train_feats live) in float32.
    """
    train_n = _normalised(train_feats, None if device is None else torch.device(device))
    dev = train_n.device
    test_n = _normalised(test_feats, dev)
    train_y = as_tensor(train_labels).reshape(-1).long().to(dev)
    if train_y.numel() != train_n.shape[0]:
        raise ValueError("train_feats and train_labels differ in length")
    if (train_y < 0).any():
        raise ValueError("knn_classify needs class ids >= 0")
    if num_classes is None:
        num_classes = int(train_y.max().item()) + 1
    k = max(1, min(int(k), train_n.shape[0]))
    scores = torch.empty(test_n.shape[0], num_classes, device=dev)
    for rows, votes in _knn_votes(train_n, train_y, test_n, [k], temperature, num_classes, batch_size):
        scores[rows] = votes[k]
    return scores


def knn_eval(
    train_f: Any,
    train_y: Any,
    test_f: Any,
    test_y: Any,
    ks: Sequence[int] = (10, 20, 100),
    temperature: float = 0.07,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
) -> KnnResult:
    """Weighted kNN accuracy for each k; the headline is k=20 (DINO's) when evaluated, else the first k.

    Fractions 0..1; top5 only when there are more than 5 classes; each k is clipped to the train
    size (the result keeps the requested k). Labels may be any integers (mapped to 0..C-1).
    """
    train_idx, test_idx, classes = encode_labels(train_y, test_y)
    assert test_idx is not None  # test_y was given
    train_n = _normalised(train_f, None if device is None else torch.device(device))
    dev = train_n.device
    test_n = _normalised(test_f, dev)
    n_train, n_test, num_classes = train_n.shape[0], test_n.shape[0], len(classes)
    if train_idx.numel() != n_train or test_idx.numel() != n_test:
        raise ValueError("features and labels differ in length")
    ks = list(dict.fromkeys(int(k) for k in ks))
    if not ks:
        raise ValueError("knn_eval needs at least one k")
    eff = {k: max(1, min(int(k), n_train)) for k in ks}
    train_idx, test_idx = train_idx.to(dev), test_idx.to(dev)
    want_top5 = num_classes > 5
    hits1: dict[int, float] = {k: 0 for k in ks}
    hits5: dict[int, float] = {k: 0 for k in ks}
    # Accumulate hit counts chunk by chunk rather than keeping (n_test, C) scores for every k.
    for rows, votes in _knn_votes(
        train_n, train_idx, test_n, sorted(set(eff.values())), temperature, num_classes, batch_size
    ):
        y = test_idx[rows]
        for k in ks:
            v = votes[eff[k]]
            hits1[k] += (v.argmax(dim=1) == y).sum().item()
            if want_top5:
                hits5[k] += (v.topk(5, dim=1).indices == y[:, None]).any(dim=1).sum().item()
    per_k = tuple(
        KnnAccuracy(k, hits1[k] / max(n_test, 1), hits5[k] / max(n_test, 1) if want_top5 else None) for k in ks
    )
    return KnnResult(
        per_k=per_k,
        n_train=n_train,
        n_test=n_test,
        temperature=temperature,
        headline_k=HEADLINE_K if HEADLINE_K in ks else ks[0],
    )
