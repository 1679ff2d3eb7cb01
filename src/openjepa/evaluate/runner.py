"""From (frozen encoder, dataset spec, task) to a result dict: the path every evaluation entry point uses.

The CLI (`openjepa eval|extract`), the demo, the kNN monitor during pretraining and the benchmarks
all call these functions, so a number means the same thing wherever it is printed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
from torch.utils.data import Dataset, Subset

from ..data import build_dataset, make_eval_transforms
from .features import FeatureCache, extract_features, fingerprint
from .knn import knn_eval
from .linear import linear_probe
from .lowshot import lowshot_eval
from .attentive import attentive_probe

TASKS = ("linear", "knn", "lowshot", "attentive")
DEFAULT_POOLING = {"linear": "avg", "knn": "avg", "lowshot": "avg", "attentive": "patch"}


def eval_datasets(spec: str, img_size: int, label_key: str | None = None, max_train: int | None = None,
                  max_test: int | None = None) -> tuple[Dataset, Dataset]:
    """Train and test splits of a dataset spec with deterministic eval transforms (resize + centre crop)."""
    transform = make_eval_transforms(img_size)
    kw: dict[str, Any] = {}
    if spec.lower().startswith(("shapes", "demo")):
        kw["img_size"] = img_size
    if label_key:
        kw["label_key"] = label_key
    train = build_dataset(spec, split="train", transform=transform, **kw)
    test = build_dataset(spec, split="test", transform=transform, **kw)
    # Prefixes are class-balanced for the shipped .npz files (they are pre-shuffled).
    if max_train is not None and len(train) > max_train:
        train = Subset(train, range(max_train))
    if max_test is not None and len(test) > max_test:
        test = Subset(test, range(max_test))
    return train, test


def features_for(encoder: nn.Module, dataset: Dataset, pooling: str, *, device: str | torch.device = "cpu",
                 batch_size: int = 256, cache_dir: str | Path | None = None, key: tuple = (),
                 progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of a dataset, cached on disk under a fingerprint of (weights, key, pooling) when asked."""
    def compute() -> tuple[torch.Tensor, torch.Tensor]:
        return extract_features(encoder, dataset, pooling=pooling, batch_size=batch_size, device=device,
                                progress=progress)

    if cache_dir is None:
        return compute()
    return FeatureCache(cache_dir).get_or_compute(fingerprint(encoder, pooling, len(dataset), *key), compute)


def run_probe(task: str, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
              *, device: str | torch.device = "cpu", seed: int = 0) -> dict[str, Any]:
    """Run one probe on extracted features; `top1` (0..1) is the headline number of every task."""
    (xtr, ytr), (xte, yte) = train, test
    if task == "linear":
        return linear_probe(xtr, ytr, xte, yte, seed=seed, device=device)
    if task == "knn":
        res = knn_eval(xtr, ytr, xte, yte, device=device)
        res["top1"] = res["k20_top1"]  # the k of DINO's protocol is the headline
        if "k20_top5" in res:
            res["top5"] = res["k20_top5"]
        return res
    if task == "lowshot":
        res: dict[str, Any] = {"settings": lowshot_eval(xtr, ytr, xte, yte)}
        res["top1"] = res["settings"]["1%"]["mean"]
        res["n_train"], res["n_test"] = len(xtr), len(xte)
        return res
    if task == "attentive":
        return attentive_probe(xtr.float(), ytr, xte.float(), yte, seed=seed, device=device)
    raise ValueError(f"unknown evaluation task {task!r}; choose one of {', '.join(TASKS)}")


def evaluate_encoder(encoder: nn.Module, data: str, task: str, *, pooling: str | None = None,
                     label_key: str | None = None, img_size: int | None = None,
                     device: str | torch.device = "cpu", batch_size: int = 256,
                     cache_dir: str | Path | None = None, max_train: int | None = None,
                     max_test: int | None = None, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Extract features of both splits and run the probe; returns the result dict (with `seconds`)."""
    t0 = time.perf_counter()
    pooling = pooling or DEFAULT_POOLING[task]
    img_size = img_size or int(encoder.img_size[0])
    train_ds, test_ds = eval_datasets(data, img_size, label_key, max_train, max_test)
    key = (data, label_key or "", img_size)
    train = features_for(encoder, train_ds, pooling, device=device, batch_size=batch_size, cache_dir=cache_dir,
                         key=key + ("train",), progress=progress)
    test = features_for(encoder, test_ds, pooling, device=device, batch_size=batch_size, cache_dir=cache_dir,
                        key=key + ("test",), progress=progress)
    result = {"task": task, "pooling": pooling, "data": data, **run_probe(task, train, test, device=device,
                                                                           seed=seed)}
    result.setdefault("n_train", len(train[0]))
    result.setdefault("n_test", len(test[0]))
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result


def knn_monitor(data: str, img_size: int, max_train: int = 2000, max_test: int = 1000,
                device: str | torch.device = "cpu") -> Callable[[nn.Module, int], dict[str, float]]:
    """A pretraining callback: kNN top-1 of the target encoder on a held-out split, every few epochs."""
    train_ds, test_ds = eval_datasets(data, img_size, max_train=max_train, max_test=max_test)

    def monitor(model: nn.Module, epoch: int) -> dict[str, float]:
        target = model.target_encoder
        train = extract_features(target, train_ds, device=device, progress=False)
        test = extract_features(target, test_ds, device=device, progress=False)
        return {"knn_top1": run_probe("knn", train, test, device=device)["top1"]}

    return monitor


def markdown_summary(results: list[dict[str, Any]]) -> str:
    """A markdown table of result dicts (one row each)."""
    cols = ["task", "checkpoint", "encoder", "pooling", "top1", "top5", "n_train", "n_test", "seconds"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in results:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(f"{v:.4f}" if isinstance(v, float) and c in ("top1", "top5") else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
