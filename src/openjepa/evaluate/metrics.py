"""Classification metrics shared by every probe: top-k accuracy, confusion matrix, per-class accuracy."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ._common import as_tensor


def topk_accuracy(logits_or_scores: Any, labels: Any, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Fraction (0..1) of rows whose label is among the k highest scores, as {"top1": .., "top5": ..}.

    k is clipped to the number of classes; a label of -1 (a class the probe never saw) is always wrong.
    """
    scores = as_tensor(logits_or_scores)
    labels = as_tensor(labels).reshape(-1).to(scores.device).long()
    if scores.ndim != 2 or scores.shape[0] != labels.shape[0]:
        raise ValueError(
            f"scores must be (N, C) matching labels (N,), got {tuple(scores.shape)} and {tuple(labels.shape)}"
        )
    n, c = scores.shape
    out: dict[str, float] = {}
    if n == 0:
        return {f"top{k}": float("nan") for k in ks}
    kmax = min(max(ks), c)
    top = scores.topk(kmax, dim=1).indices  # (N, kmax), best first
    hit = top == labels[:, None]
    for k in ks:
        out[f"top{k}"] = hit[:, : min(k, c)].any(dim=1).sum().item() / n  # exact ratio, not a float32 mean
    return out


def headline_accuracy(scores: Any, labels: Any, num_classes: int) -> tuple[float, float | None]:
    """(top-1, top-5) of (N, C) scores; top-5 is None with 5 classes or fewer, where it says nothing."""
    acc = topk_accuracy(scores, labels, ks=(1, 5) if num_classes > 5 else (1,))
    return acc["top1"], acc.get("top5")


def confusion_matrix(pred: Any, labels: Any, num_classes: int) -> torch.Tensor:
    """(C, C) int64 counts, rows = true class, columns = predicted class; rows for label -1 are dropped."""
    pred = as_tensor(pred).reshape(-1).long().cpu()
    labels = as_tensor(labels).reshape(-1).long().cpu()
    keep = (labels >= 0) & (labels < num_classes) & (pred >= 0) & (pred < num_classes)
    flat = labels[keep] * num_classes + pred[keep]
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(pred: Any, labels: Any, num_classes: int) -> torch.Tensor:
    """(C,) float accuracy of each true class (recall); NaN for classes with no examples."""
    cm = confusion_matrix(pred, labels, num_classes).double()
    support = cm.sum(dim=1)
    acc = cm.diagonal() / support
    return torch.where(support > 0, acc, torch.full_like(acc, float("nan"))).float()


def mean_per_class_accuracy(pred: Any, labels: Any, num_classes: int) -> float:
    """Mean of `per_class_accuracy` over classes present in `labels` (balanced accuracy)."""
    return per_class_accuracy(pred, labels, num_classes).nanmean().item()
