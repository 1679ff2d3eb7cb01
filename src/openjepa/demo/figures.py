"""The demo's figures: what to look at besides the accuracy table.

Retrieval grids of the learned and the random encoder (the same test queries, their nearest train
images by cosine similarity; neighbours with the query's label are marked), and the predictor's
outputs decoded to pixels (`openjepa viz predict`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..evaluate.features import extract_features
from ..evaluate.runner import eval_datasets
from ..viz import denormalize, plot_retrieval_grid
from ..viz.predict import predict_grid

logger = logging.getLogger("openjepa.demo")

__all__ = ["retrieval_figure", "prediction_figure", "neighbour_agreement", "WHERE_TO_LOOK"]

# figure file -> what it shows, printed by `openjepa demo`
WHERE_TO_LOOK = {
    "retrieval_learned.png": "test images and their nearest train images under the learned encoder",
    "retrieval_random.png": "the same queries under the random encoder: neighbours share colour and texture",
    "predictions.png": "what the predictor predicts at hidden blocks, decoded to pixels",
    "curves.png": "loss, learning rate, weight decay and EMA momentum over the run",
    "masks.png": "the context and target blocks I-JEPA trained with",
    "pca.png": "the first three principal components of the learned patch features",
}


def _queries(labels: torch.Tensor, n: int) -> list[int]:
    """The first test image of each class, then the next ones, `n` in all."""
    first: dict[int, int] = {}
    for i, y in enumerate(labels.tolist()):
        first.setdefault(int(y), i)
    order = list(first.values())[:n]
    return order + [i for i in range(len(labels)) if i not in order][: max(0, n - len(order))]


@torch.no_grad()
def retrieval_figure(
    encoder: nn.Module,
    data: str,
    img_size: int,
    pooling: str,
    out_png: Path,
    *,
    n_queries: int = 6,
    k: int = 7,
    device: str | torch.device = "cpu",
) -> tuple[Path, float]:
    """Draw test queries with their k nearest train images; returns (PNG, neighbour agreement on all test images)."""
    train_ds, test_ds = eval_datasets(data, img_size)
    train_f, train_y = extract_features(encoder, train_ds, pooling=pooling, device=device, progress=False)
    test_f, test_y = extract_features(encoder, test_ds, pooling=pooling, device=device, progress=False)
    train_n = F.normalize(train_f.float(), dim=-1)  # (N, D)
    test_n = F.normalize(test_f.float(), dim=-1)  # (M, D)
    order = _queries(test_y, n_queries)
    scores, hits = (test_n[order] @ train_n.T).topk(k, dim=-1)  # (Q, k)
    names = getattr(getattr(train_ds, "dataset", train_ds), "classes", None)

    def label(y: int) -> str:
        return names[y] if names is not None else str(y)

    q_lab = [label(int(test_y[i])) for i in order]
    n_lab = [[label(int(train_y[j])) for j in row] for row in hits.tolist()]
    q_imgs = list(denormalize(torch.stack([test_ds[i][0] for i in order])))
    nb_imgs = [list(denormalize(torch.stack([train_ds[j][0] for j in row]))) for row in hits.tolist()]
    plot_retrieval_grid(q_imgs, nb_imgs, scores.tolist(), out_png, q_lab, n_lab, dpi=90)
    return out_png, neighbour_agreement(test_n, test_y, train_n, train_y, k)


def neighbour_agreement(
    test_n: torch.Tensor, test_y: torch.Tensor, train_n: torch.Tensor, train_y: torch.Tensor, k: int, chunk: int = 1024
) -> float:
    """Share of every test image's k nearest train images (cosine) that carry its label.

    Measured over the whole test split, not only the drawn queries: a handful of queries is too few
    to compare two encoders by (6 queries x 7 neighbours moved this share by +-7 points run to run).
    """
    hits = 0
    for i in range(0, len(test_n), chunk):
        idx = (test_n[i : i + chunk] @ train_n.T).topk(k, dim=-1).indices  # (chunk, k)
        hits += int((train_y[idx] == test_y[i : i + chunk, None]).sum())
    return hits / max(1, len(test_n) * k)


def prediction_figure(checkpoint: Path, data: str, out_png: Path, device: str | torch.device = "cpu") -> Path | None:
    """The predictor's outputs decoded to pixels (a short decoder fit); None if it could not be drawn."""
    try:
        return predict_grid(
            checkpoint, data, out_png, n_images=6, decoder_images=2000, decoder_steps=600, device=device
        ).path
    except (ValueError, RuntimeError) as err:  # a figure is not worth failing a finished demo over
        logger.warning("predictions.png not drawn: %s", err)
        return None
