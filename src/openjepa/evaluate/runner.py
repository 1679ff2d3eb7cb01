"""From (frozen encoder, dataset spec, task) to a typed result: the path every evaluation entry point uses.

The CLI (`openjepa eval|extract`), the demo, the kNN monitor during pretraining and the benchmarks
all call these functions, so a number means the same thing wherever it is printed.

Besides real encoders, the string ``"pixels"`` names a pseudo-encoder, the raw-pixel baseline
(docs/evaluation.md): flattened pixels -> PCA to 100 dimensions fitted on the first 5,000
train images -> standardised with train statistics. Every probe that takes pooled features accepts it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence, cast

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset, Subset

from ..core.hashing import fingerprint
from ..data import DataSpec, as_data_spec, build_dataset, make_eval_transforms
from ..interop.source import PIXELS, EncoderSource, parse_encoder_source
from ..models.ijepa import IJEPA
from .attentive import attentive_probe
from .features import FeatureCache, extract_features
from .knn import knn_eval
from .linear import linear_probe
from .lowshot import lowshot_eval
from .pixels import flat_pixels
from .regression import regression_probe
from .results import EvalResult, ProbeResult

TASKS = ("linear", "knn", "lowshot", "attentive", "regression")
DEFAULT_POOLING = {"linear": "avg", "knn": "avg", "lowshot": "avg", "attentive": "patch", "regression": "avg"}
# Encoders this shallow are read through the token means of all their layers ("avg_all") by the pooled
# probes: on a validation split carved from CIFAR-10's train set, a 6-block ViT-Tiny read that way gained
# the most over its random initialisation (bench/readout.py, docs/evaluation.md). Deeper encoders keep
# the paper's readouts.
SMALL_ENCODER_DEPTH = 6
PIXEL_PCA_DIM = 100
PIXEL_FIT_ON = 5000
PIXEL_DEFAULT_IMG_SIZE = 64  # only for datasets that are not arrays (image folders): resize + crop to this
# Label array of a .npz read as a number by the regression probe, when the file has one.
REGRESSION_LABEL_KEYS = ("n_objects",)

Features = tuple[torch.Tensor, torch.Tensor]


def data_key(spec: DataSpec | str) -> tuple:
    """Cache-key part for a dataset spec: the spec plus size and mtime of the file or folder it names,
    so features computed from an older copy of the data are never served from the cache."""
    spec = as_data_spec(spec)
    if spec.stat_path is None:  # generated datasets (shapes:N) and shards have no one file
        return (spec.text,)
    try:
        st = os.stat(Path(spec.stat_path).expanduser())
        return (spec.text, int(st.st_size), int(st.st_mtime_ns))
    except OSError:
        return (spec.text,)


def default_pooling(task: str, encoder: nn.Module) -> str:
    """What a probe reads when not told: the paper's readout, or all layers for an encoder of <= 6 blocks."""
    pooling = DEFAULT_POOLING[task]
    blocks = getattr(encoder, "blocks", None)
    if pooling == "avg" and blocks is not None and len(blocks) <= SMALL_ENCODER_DEPTH:
        return "avg_all"
    return pooling


def default_label_key(data: DataSpec | str, task: str) -> str | None:
    """The label array a task reads when none is named: the raw object count (`n_objects`) for the
    regression probe on a .npz that has one (Clevr), otherwise the class labels (None)."""
    if task != "regression":
        return None
    spec = as_data_spec(data)
    path = Path(spec.path).expanduser() if spec.kind == "npz" and spec.path else None
    if path is None or not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as npz:
        for key in REGRESSION_LABEL_KEYS:
            if f"{key}_train" in npz.files and f"{key}_test" in npz.files:
                return key
    return None


def eval_datasets(
    spec: DataSpec | str,
    img_size: int,
    label_key: str | None = None,
    max_train: int | None = None,
    max_test: int | None = None,
) -> tuple[Dataset, Dataset]:
    """Train and test splits of a dataset spec with deterministic eval transforms (resize + centre crop)."""
    spec = as_data_spec(spec)
    transform = make_eval_transforms(img_size)
    kw: dict[str, Any] = {"img_size": img_size, "label_key": label_key or None}
    train: Dataset = build_dataset(spec, split="train", transform=transform, **kw)
    test: Dataset = build_dataset(spec, split="test", transform=transform, **kw)
    # Prefixes are class-balanced for the shipped .npz files (they are pre-shuffled).
    if max_train is not None and len(train) > max_train:  # type: ignore[arg-type]
        train = Subset(train, range(max_train))
    if max_test is not None and len(test) > max_test:  # type: ignore[arg-type]
        test = Subset(test, range(max_test))
    return train, test


def features_for(
    encoder: nn.Module,
    dataset: Dataset,
    pooling: str,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    cache_dir: str | Path | None = None,
    key: tuple = (),
    progress: bool = True,
) -> Features:
    """Features of a dataset, cached on disk under a fingerprint of (weights, key, pooling) when asked."""

    def compute() -> Features:
        return extract_features(
            encoder, dataset, pooling=pooling, batch_size=batch_size, device=device, progress=progress
        )

    if cache_dir is None:
        return compute()
    n = len(dataset)  # type: ignore[arg-type]
    return FeatureCache(cache_dir).get_or_compute(fingerprint(encoder, pooling, n, *key), compute)


# ----------------------------------------------------------------------------------- raw pixels


def pixel_features_from_datasets(
    train: Dataset,
    test: Dataset,
    *,
    pca_dim: int = PIXEL_PCA_DIM,
    fit_on: int = PIXEL_FIT_ON,
    seed: int = 0,
    chunk: int = 4096,
) -> tuple[Features, Features]:
    """Raw-pixel baseline features: flattened pixels -> PCA(pca_dim) fitted on the first `fit_on` train
    images -> standardised with train statistics. Returns ((train_x, train_y), (test_x, test_y)), float32."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    x_tr, y_tr = flat_pixels(train)
    x_te, y_te = flat_pixels(test)
    fit = x_tr[: max(1, int(fit_on))].astype(np.float32)
    k = int(min(pca_dim, fit.shape[0], fit.shape[1]))
    pca = PCA(n_components=k, random_state=seed).fit(fit)
    del fit

    def project(x: np.ndarray) -> np.ndarray:  # in chunks: float32 copies of all images can be large
        return (
            np.concatenate([pca.transform(x[s : s + chunk].astype(np.float32)) for s in range(0, len(x), chunk)])
            if len(x)
            else np.zeros((0, k), np.float32)
        )

    p_tr, p_te = project(x_tr), project(x_te)
    scaler = StandardScaler().fit(p_tr)
    f_tr = torch.from_numpy(scaler.transform(p_tr).astype(np.float32))
    f_te = torch.from_numpy(scaler.transform(p_te).astype(np.float32))
    return (f_tr, y_tr), (f_te, y_te)


def pixel_features(
    data: DataSpec | str,
    *,
    pca_dim: int = PIXEL_PCA_DIM,
    fit_on: int = PIXEL_FIT_ON,
    label_key: str | None = None,
    img_size: int | None = None,
    max_train: int | None = None,
    max_test: int | None = None,
    cache_dir: str | Path | None = None,
    seed: int = 0,
) -> tuple[Features, Features]:
    """Raw-pixel baseline features of a dataset spec (see `pixel_features_from_datasets`).

    Array datasets (.npz, shapes:N) use their stored pixels at their own resolution (`img_size`
    only sets the size of generated shapes); image folders are resized and centre-cropped to
    `img_size` (default 64). Cached under a fingerprint of all settings when `cache_dir` is given.
    """
    data = as_data_spec(data)
    size = int(img_size or PIXEL_DEFAULT_IMG_SIZE)
    train_ds, test_ds = eval_datasets(data, size, label_key, max_train, max_test)

    def compute() -> tuple[Features, Features]:
        return pixel_features_from_datasets(train_ds, test_ds, pca_dim=pca_dim, fit_on=fit_on, seed=seed)

    if cache_dir is None:
        return compute()
    key = (
        PIXELS,
        int(pca_dim),
        int(fit_on),
        int(seed),
        *data_key(data),
        label_key or "",
        size,
        len(train_ds),  # type: ignore[arg-type]
        len(test_ds),  # type: ignore[arg-type]
    )
    cache = FeatureCache(cache_dir)
    fp_train, fp_test = fingerprint(*key, "train"), fingerprint(*key, "test")
    if fp_train in cache and fp_test in cache:
        try:
            return cache.load(fp_train), cache.load(fp_test)
        except Exception:  # unreadable entry: recompute below
            pass
    train, test = compute()
    cache.save(fp_train, *train)
    cache.save(fp_test, *test)
    return train, test


# ---------------------------------------------------------------------------------------- probes


def run_probe(
    task: str, train: Features, test: Features, *, device: str | torch.device = "cpu", seed: int = 0
) -> ProbeResult:
    """Run one probe on extracted features; `top1` (0..1) is the headline number of every task.

    For "knn" it is the accuracy at k=20 (DINO's protocol), for "lowshot" the mean over seeds at 1%
    of the labels, for "regression" (ridge on the label read as a number, e.g. a Clevr object count)
    the count accuracy, the fraction of test points with round(prediction) == label.
    """
    if task not in TASKS:
        raise ValueError(f"unknown evaluation task {task!r}; choose one of {', '.join(TASKS)}")
    (xtr, ytr), (xte, yte) = train, test
    want = 3 if task == "attentive" else 2
    if xtr.ndim != want or xte.ndim != want:
        what = (
            "patch tokens (N, T, D): use pooling 'patch'"
            if want == 3
            else "pooled features (N, D): use pooling 'avg' or 'avg_last4'"
        )
        raise ValueError(f"the {task} probe needs {what}; got features of shape {tuple(xtr.shape)}")
    if task == "linear":
        return linear_probe(xtr, ytr, xte, yte, seed=seed, device=device)
    if task == "knn":
        return knn_eval(xtr, ytr, xte, yte, device=device)
    if task == "lowshot":
        return lowshot_eval(xtr, ytr, xte, yte)
    if task == "regression":
        return regression_probe(xtr, ytr, xte, yte)
    return attentive_probe(xtr.float(), ytr, xte.float(), yte, seed=seed, device=device)


def evaluate_encoder(
    encoder: nn.Module | str | EncoderSource,
    data: DataSpec | str,
    task: str,
    *,
    pooling: str | None = None,
    label_key: str | None = None,
    img_size: int | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    cache_dir: str | Path | None = None,
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
    progress: bool = True,
    pca_dim: int = PIXEL_PCA_DIM,
    fit_on: int = PIXEL_FIT_ON,
) -> EvalResult:
    """Extract features of both splits and run the probe; the result says what ran and how long it took.

    `encoder` is a frozen encoder module, or the source "pixels" for the raw-pixel baseline (PCA to
    `pca_dim` fitted on the first `fit_on` train images, standardised); load any other source with
    `openjepa.interop.source.resolve_encoder`. `data` is a dataset spec (parsed or text). `label_key`
    picks another label array of a .npz (e.g. "dist" for Clevr/Dist); the regression task defaults to
    "n_objects" where present.
    """
    if task not in TASKS:
        raise ValueError(f"unknown evaluation task {task!r}; choose one of {', '.join(TASKS)}")
    t0 = time.perf_counter()
    data = as_data_spec(data)
    label_key = label_key or default_label_key(data, task)
    if isinstance(encoder, (str, EncoderSource)):
        train, test, pooling, extra = _pixel_baseline(
            encoder, data, task, pooling, label_key, img_size, max_train, max_test, cache_dir, seed, pca_dim, fit_on
        )
    else:
        pooling = pooling or default_pooling(task, encoder)
        # evaluated encoders are VisionTransformers (openjepa.interop.Encoder): img_size is (h, w)
        img_size = img_size or int(cast("tuple[int, int]", encoder.img_size)[0])
        train, test = _split_features(
            encoder, data, pooling, label_key, img_size, max_train, max_test, device, batch_size, cache_dir, progress
        )
        extra = {"img_size": img_size}
    probe = run_probe(task, train, test, device=device, seed=seed)
    return EvalResult(
        task=task,
        pooling=pooling,
        data=data.text,
        probe=probe,
        label_key=label_key or None,
        seconds=round(time.perf_counter() - t0, 2),
        **extra,
    )


def _split_features(
    encoder: nn.Module,
    data: DataSpec,
    pooling: str,
    label_key: str | None,
    img_size: int,
    max_train: int | None,
    max_test: int | None,
    device: str | torch.device,
    batch_size: int,
    cache_dir: str | Path | None,
    progress: bool,
) -> tuple[Features, Features]:
    """Encoder features of the train and test splits of `data` at `img_size`, each cached under its own key."""
    train_ds, test_ds = eval_datasets(data, img_size, label_key, max_train, max_test)
    key = (*data_key(data), label_key or "", img_size)
    train, test = (
        features_for(
            encoder,
            ds,
            pooling,
            device=device,
            batch_size=batch_size,
            cache_dir=cache_dir,
            key=(*key, split),
            progress=progress,
        )
        for ds, split in ((train_ds, "train"), (test_ds, "test"))
    )
    return train, test


def _pixel_baseline(
    source: str | EncoderSource,
    data: DataSpec,
    task: str,
    pooling: str | None,
    label_key: str | None,
    img_size: int | None,
    max_train: int | None,
    max_test: int | None,
    cache_dir: str | Path | None,
    seed: int,
    pca_dim: int,
    fit_on: int,
) -> tuple[Features, Features, str, dict[str, Any]]:
    """Raw-pixel features of both splits, their pooling name and extra result fields (checked to apply)."""
    if not parse_encoder_source(source).is_pixels:
        raise ValueError(
            f"unknown pseudo-encoder {str(source)!r}; the only one is {PIXELS!r} "
            f"(load other sources with resolve_encoder)"
        )
    if task == "attentive":
        raise ValueError(
            "the raw-pixel baseline gives one pooled vector per image; the attentive probe "
            "needs patch tokens from an encoder"
        )
    if pooling not in (None, "avg"):
        raise ValueError(f"pooling {pooling!r} does not apply to the raw-pixel baseline")
    train, test = pixel_features(
        data,
        pca_dim=pca_dim,
        fit_on=fit_on,
        label_key=label_key,
        img_size=img_size,
        max_train=max_train,
        max_test=max_test,
        cache_dir=cache_dir,
        seed=seed,
    )
    extra: dict[str, Any] = {"pca_dim": int(train[0].shape[1]), "pca_fit_on": min(int(fit_on), len(train[0]))}
    return train, test, f"pca{train[0].shape[1]}", extra


def knn_monitor(
    data: DataSpec | str, img_size: int, max_train: int = 2000, max_test: int = 1000, device: str | torch.device = "cpu"
) -> Callable[[IJEPA, int], dict[str, float]]:
    """A pretraining callback: kNN top-1 of the target encoder on a held-out split, every few epochs."""
    train_ds, test_ds = eval_datasets(data, img_size, max_train=max_train, max_test=max_test)

    def monitor(model: IJEPA, epoch: int) -> dict[str, float]:
        target = model.target_encoder
        train = extract_features(target, train_ds, device=device, progress=False)
        test = extract_features(target, test_ds, device=device, progress=False)
        return {"knn_top1": run_probe("knn", train, test, device=device).top1}

    return monitor


def markdown_summary(results: Sequence[EvalResult]) -> str:
    """A markdown table of evaluation results (one row each), as `openjepa eval` prints it."""
    cols = ["task", "data", "checkpoint", "encoder", "pooling", "top1", "top5", "n_train", "n_test", "seconds"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for result in results:
        r = result.to_dict()
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(f"{v:.4f}" if isinstance(v, float) and c in ("top1", "top5") else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
