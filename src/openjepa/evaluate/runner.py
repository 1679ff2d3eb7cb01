"""From (frozen encoder, dataset spec, task) to a result dict: the path every evaluation entry point uses.

The CLI (`openjepa eval|extract`), the demo, the kNN monitor during pretraining and the benchmarks
all call these functions, so a number means the same thing wherever it is printed.

Besides real encoders, the string ``"pixels"`` names a pseudo-encoder, the raw-pixel baseline of
``../shared/data/README.md``: flattened pixels -> PCA to 100 dimensions fitted on the first 5,000
train images -> standardised with train statistics. Every probe that takes pooled features accepts it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset, Subset

from ..data import build_dataset, make_eval_transforms
from .attentive import attentive_probe
from .features import FeatureCache, extract_features, fingerprint
from .knn import knn_eval
from .linear import linear_probe
from .lowshot import lowshot_eval
from .regression import regression_probe

TASKS = ("linear", "knn", "lowshot", "attentive", "regression")
DEFAULT_POOLING = {"linear": "avg", "knn": "avg", "lowshot": "avg", "attentive": "patch", "regression": "avg"}
PIXELS = "pixels"  # checkpoint name of the raw-pixel pseudo-encoder
PIXEL_PCA_DIM = 100
PIXEL_FIT_ON = 5000
PIXEL_DEFAULT_IMG_SIZE = 64  # only for datasets that are not arrays (image folders): resize + crop to this
# Label array of a .npz read as a number by the regression probe, when the file has one.
REGRESSION_LABEL_KEYS = ("n_objects",)

Features = tuple[torch.Tensor, torch.Tensor]


def _npz_path(spec: str) -> Path | None:
    text = str(spec).strip()
    if text.lower().startswith("npz:"):
        return Path(text[4:]).expanduser()
    return Path(text).expanduser() if text.lower().endswith(".npz") else None


def data_key(spec: str) -> tuple:
    """Cache-key part for a dataset spec: the spec plus size and mtime of the file or folder it names,
    so features computed from an older copy of the data are never served from the cache."""
    text = str(spec).strip()
    path = _npz_path(text)
    if path is None:
        low = text.lower()
        path = Path(text[7:] if low.startswith("folder:") else text).expanduser()
    try:
        st = os.stat(path)
        return (text, int(st.st_size), int(st.st_mtime_ns))
    except OSError:  # generated datasets (shapes:N) have no file
        return (text,)


def default_label_key(data: str, task: str) -> str | None:
    """The label array a task reads when none is named: the raw object count (`n_objects`) for the
    regression probe on a .npz that has one (Clevr), otherwise the class labels (None)."""
    if task != "regression":
        return None
    path = _npz_path(data)
    if path is None or not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as npz:
        for key in REGRESSION_LABEL_KEYS:
            if f"{key}_train" in npz.files and f"{key}_test" in npz.files:
                return key
    return None


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
                 progress: bool = True) -> Features:
    """Features of a dataset, cached on disk under a fingerprint of (weights, key, pooling) when asked."""
    def compute() -> Features:
        return extract_features(encoder, dataset, pooling=pooling, batch_size=batch_size, device=device,
                                progress=progress)

    if cache_dir is None:
        return compute()
    return FeatureCache(cache_dir).get_or_compute(fingerprint(encoder, pooling, len(dataset), *key), compute)


# ----------------------------------------------------------------------------------- raw pixels


def _array_source(ds: Dataset) -> tuple[np.ndarray, np.ndarray] | None:
    """(uint8 images (N, H, W, C), int64 labels (N,)) of an array-backed dataset, without decoding
    through PIL; None when the dataset is not array-backed (image folders)."""
    if isinstance(ds, Subset):
        inner = _array_source(ds.dataset)
        if inner is None:
            return None
        idx = np.asarray(list(ds.indices), dtype=np.int64)
        return inner[0][idx], inner[1][idx]
    images = getattr(ds, "images", None)
    targets = getattr(ds, "targets", None)
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or targets is None:
        return None
    index = getattr(ds, "_index", None)  # NpzImageDataset(indices=...) keeps all images plus an index
    if index is not None:
        images = images[index]
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    if len(images) != len(targets):
        return None
    return images, targets


def _flat_pixels(ds: Dataset) -> tuple[np.ndarray, torch.Tensor]:
    """Flattened pixels (N, H*W*C) and labels. Arrays are used as stored (uint8 values at their own
    resolution, as the data README's baseline did); other datasets go through their eval transform."""
    arrays = _array_source(ds)
    if arrays is not None:
        images, labels = arrays
        return images.reshape(len(images), -1), torch.from_numpy(labels)
    xs, ys = [], []
    for i in range(len(ds)):  # type: ignore[arg-type]
        x, y = ds[i]
        xs.append(torch.as_tensor(x, dtype=torch.float32).reshape(-1).numpy())
        ys.append(int(y))
    return np.stack(xs), torch.tensor(ys, dtype=torch.int64)


def pixel_features_from_datasets(train: Dataset, test: Dataset, *, pca_dim: int = PIXEL_PCA_DIM,
                                 fit_on: int = PIXEL_FIT_ON, seed: int = 0,
                                 chunk: int = 4096) -> tuple[Features, Features]:
    """Raw-pixel baseline features: flattened pixels -> PCA(pca_dim) fitted on the first `fit_on` train
    images -> standardised with train statistics. Returns ((train_x, train_y), (test_x, test_y)), float32."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    x_tr, y_tr = _flat_pixels(train)
    x_te, y_te = _flat_pixels(test)
    fit = x_tr[: max(1, int(fit_on))].astype(np.float32)
    k = int(min(pca_dim, fit.shape[0], fit.shape[1]))
    pca = PCA(n_components=k, random_state=seed).fit(fit)
    del fit

    def project(x: np.ndarray) -> np.ndarray:  # in chunks: float32 copies of all images can be large
        return np.concatenate([pca.transform(x[s: s + chunk].astype(np.float32))
                               for s in range(0, len(x), chunk)]) if len(x) else np.zeros((0, k), np.float32)

    p_tr, p_te = project(x_tr), project(x_te)
    scaler = StandardScaler().fit(p_tr)
    f_tr = torch.from_numpy(scaler.transform(p_tr).astype(np.float32))
    f_te = torch.from_numpy(scaler.transform(p_te).astype(np.float32))
    return (f_tr, y_tr), (f_te, y_te)


def pixel_features(data: str, *, pca_dim: int = PIXEL_PCA_DIM, fit_on: int = PIXEL_FIT_ON,
                   label_key: str | None = None, img_size: int | None = None, max_train: int | None = None,
                   max_test: int | None = None, cache_dir: str | Path | None = None,
                   seed: int = 0) -> tuple[Features, Features]:
    """Raw-pixel baseline features of a dataset spec (see `pixel_features_from_datasets`).

    Array datasets (.npz, shapes:N) use their stored pixels at their own resolution (`img_size`
    only sets the size of generated shapes); image folders are resized and centre-cropped to
    `img_size` (default 64). Cached under a fingerprint of all settings when `cache_dir` is given.
    """
    size = int(img_size or PIXEL_DEFAULT_IMG_SIZE)
    train_ds, test_ds = eval_datasets(data, size, label_key, max_train, max_test)

    def compute() -> tuple[Features, Features]:
        return pixel_features_from_datasets(train_ds, test_ds, pca_dim=pca_dim, fit_on=fit_on, seed=seed)

    if cache_dir is None:
        return compute()
    key = (PIXELS, int(pca_dim), int(fit_on), int(seed), *data_key(data), label_key or "", size,
           len(train_ds), len(test_ds))
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


def run_probe(task: str, train: Features, test: Features, *, device: str | torch.device = "cpu",
              seed: int = 0) -> dict[str, Any]:
    """Run one probe on extracted features; `top1` (0..1) is the headline number of every task.

    For "regression" (ridge on the label read as a number, e.g. a Clevr object count) `top1` is the
    count accuracy, the fraction of test points with round(prediction) == label; mae / rmse / r2 are
    returned beside it.
    """
    if task not in TASKS:
        raise ValueError(f"unknown evaluation task {task!r}; choose one of {', '.join(TASKS)}")
    (xtr, ytr), (xte, yte) = train, test
    want = 3 if task == "attentive" else 2
    if xtr.ndim != want or xte.ndim != want:
        what = "patch tokens (N, T, D): use pooling 'patch'" if want == 3 else \
            "pooled features (N, D): use pooling 'avg' or 'avg_last4'"
        raise ValueError(f"the {task} probe needs {what}; got features of shape {tuple(xtr.shape)}")
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
    if task == "regression":
        res = regression_probe(xtr, ytr, xte, yte)
        res["top1"] = res["rounded_acc"]
        return res
    return attentive_probe(xtr.float(), ytr, xte.float(), yte, seed=seed, device=device)


def evaluate_encoder(encoder: nn.Module | str, data: str, task: str, *, pooling: str | None = None,
                     label_key: str | None = None, img_size: int | None = None,
                     device: str | torch.device = "cpu", batch_size: int = 256,
                     cache_dir: str | Path | None = None, max_train: int | None = None,
                     max_test: int | None = None, seed: int = 0, progress: bool = True,
                     pca_dim: int = PIXEL_PCA_DIM, fit_on: int = PIXEL_FIT_ON) -> dict[str, Any]:
    """Extract features of both splits and run the probe; returns the result dict (with `seconds`).

    `encoder` is a frozen encoder module, or "pixels" for the raw-pixel baseline (PCA to `pca_dim`
    fitted on the first `fit_on` train images, standardised). `label_key` picks another label array
    of a .npz (e.g. "dist" for Clevr/Dist); the regression task defaults to "n_objects" where present.
    """
    if task not in TASKS:
        raise ValueError(f"unknown evaluation task {task!r}; choose one of {', '.join(TASKS)}")
    t0 = time.perf_counter()
    label_key = label_key or default_label_key(data, task)
    if isinstance(encoder, str):
        if encoder != PIXELS:
            raise ValueError(f"unknown pseudo-encoder {encoder!r}; the only one is {PIXELS!r}")
        if task == "attentive":
            raise ValueError("the raw-pixel baseline gives one pooled vector per image; the attentive probe "
                             "needs patch tokens from an encoder")
        if pooling not in (None, "avg"):
            raise ValueError(f"pooling {pooling!r} does not apply to the raw-pixel baseline")
        train, test = pixel_features(data, pca_dim=pca_dim, fit_on=fit_on, label_key=label_key,
                                     img_size=img_size, max_train=max_train, max_test=max_test,
                                     cache_dir=cache_dir, seed=seed)
        pooling = f"pca{train[0].shape[1]}"
        extra: dict[str, Any] = {"pca_dim": int(train[0].shape[1]), "pca_fit_on": min(int(fit_on), len(train[0]))}
    else:
        pooling = pooling or DEFAULT_POOLING[task]
        img_size = img_size or int(encoder.img_size[0])
        train_ds, test_ds = eval_datasets(data, img_size, label_key, max_train, max_test)
        key = (*data_key(data), label_key or "", img_size)
        train = features_for(encoder, train_ds, pooling, device=device, batch_size=batch_size,
                             cache_dir=cache_dir, key=key + ("train",), progress=progress)
        test = features_for(encoder, test_ds, pooling, device=device, batch_size=batch_size,
                            cache_dir=cache_dir, key=key + ("test",), progress=progress)
        extra = {"img_size": img_size}
    result = {"task": task, "pooling": pooling, "data": data, **extra,
              **run_probe(task, train, test, device=device, seed=seed)}
    if label_key:
        result["label_key"] = label_key
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
    cols = ["task", "data", "checkpoint", "encoder", "pooling", "top1", "top5", "n_train", "n_test", "seconds"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in results:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(f"{v:.4f}" if isinstance(v, float) and c in ("top1", "top5") else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
