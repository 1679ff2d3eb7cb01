"""The single frozen-feature path used by every evaluation, plus an on-disk feature cache.

`extract_features` pools with openjepa.models.pooling (the paper's average of the last layer's
patch tokens, or of the last 4 layers concatenated, or all tokens for attentive probing).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..core.atomic import atomic_path
from ..core.hashing import fingerprint
from ..models.pooling import POOLINGS, pool_features

__all__ = ["POOLINGS", "FeatureCache", "extract_features", "fingerprint"]


def _as_loader(dataset: Dataset | DataLoader, batch_size: int, num_workers: int, device: torch.device) -> DataLoader:
    """`dataset` itself when it is a DataLoader, else an in-order loader over it."""
    if isinstance(dataset, DataLoader):
        return dataset
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        drop_last=False,
    )


def _sized(obj: Any) -> int | None:
    """len(obj), or None for iterables without a length."""
    try:
        return len(obj)
    except (TypeError, AttributeError):
        return None


class _Collector:
    """Gathers per-batch features, into one preallocated tensor when the item count is known
    (so "patch" never needs a 2x-memory cat), else into chunks concatenated at the end."""

    def __init__(self, n_items: int | None) -> None:
        self.n_items = n_items
        self.feats: torch.Tensor | None = None
        self.chunks: list[torch.Tensor] = []
        self.filled = 0

    def add(self, out: torch.Tensor) -> None:
        """Append one (B, ...) CPU batch."""
        if self.n_items is not None:
            if self.feats is None:
                self.feats = torch.empty((self.n_items, *out.shape[1:]), dtype=out.dtype)
            self.feats[self.filled : self.filled + len(out)] = out
        else:
            self.chunks.append(out)
        self.filled += len(out)

    def result(self, drop_last: bool) -> torch.Tensor:
        """All features, (N, ...); a loader that dropped its ragged last batch gives the rows it yielded."""
        if self.n_items is None:
            if not self.chunks:
                raise ValueError("dataset yielded no batches")
            return torch.cat(self.chunks)
        if self.feats is not None and self.filled == self.n_items:
            return self.feats
        if self.feats is not None and drop_last and self.filled < self.n_items:
            return self.feats[: self.filled].clone()
        raise ValueError(f"dataset reported {self.n_items} items but yielded {self.filled}")


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    dataset: Dataset | DataLoader,
    *,
    pooling: str = "avg",
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    amp_bf16: bool | None = None,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode a dataset of (image, label) with a frozen encoder; returns (features, labels) on CPU.

    pooling (see openjepa.models.pooling): "avg" -> (N, D) float32 token mean of the last layer;
    "avg_last4" -> (N, 4D) float32, the token means of the last 4 layers concatenated; "patch" ->
    (N, T, D) all tokens, stored as float16 here since they are T times the pooled size.
    The encoder is moved to `device` (in place) and put in eval mode for the pass; its previous
    train/eval mode is restored afterwards. `dataset` may also be a ready DataLoader, used as is.
    amp_bf16: None -> bf16 autocast on CUDA only; True forces it (also on CPU); False disables it.
    Labels keep the dtype the loader collates them to (int64 class ids, or floats for regression).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    device = torch.device(device)
    use_amp = (device.type == "cuda") if amp_bf16 is None else bool(amp_bf16)
    store_dtype = torch.float16 if pooling == "patch" else torch.float32
    loader = _as_loader(dataset, batch_size, num_workers, device)
    collected = _Collector(_sized(getattr(loader, "dataset", None)))
    labels: list[torch.Tensor] = []
    was_training = encoder.training
    encoder.to(device).eval()
    try:
        for batch in tqdm(
            loader, total=_sized(loader), disable=not progress, desc=f"features ({pooling})", dynamic_ncols=True
        ):
            images, target = batch[0], batch[1]
            images = images.to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                out = pool_features(encoder, images, pooling)
            collected.add(out.to("cpu", store_dtype))
            labels.append(torch.as_tensor(target).cpu())
    finally:
        encoder.train(was_training)
    return collected.result(bool(getattr(loader, "drop_last", False))), torch.cat(labels)


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class FeatureCache:
    """Directory of `<fingerprint>.pt` files holding {"feats", "labels"}, written atomically."""

    def __init__(self, folder: str | os.PathLike) -> None:
        """Use (and create if needed) `folder` for cached feature files."""
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, fingerprint: str) -> Path:
        """File that holds the entry for `fingerprint`."""
        if not _SAFE_NAME.match(fingerprint):
            raise ValueError(f"fingerprint must be a plain file name, got {fingerprint!r}")
        return self.folder / f"{fingerprint}.pt"

    def __contains__(self, fingerprint: str) -> bool:
        return self.path(fingerprint).is_file()

    def load(self, fingerprint: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Read a cached entry (tensors only: weights_only=True never unpickles code)."""
        data = torch.load(self.path(fingerprint), map_location="cpu", weights_only=True)
        return data["feats"], data["labels"]

    def save(self, fingerprint: str, feats: torch.Tensor, labels: torch.Tensor) -> Path:
        """Write an entry atomically (core.atomic: temp file then rename), so readers never see half a file."""
        final = self.path(fingerprint)
        with atomic_path(final) as tmp:
            torch.save({"feats": feats.detach().cpu(), "labels": torch.as_tensor(labels).cpu()}, tmp)
        return final

    def get_or_compute(
        self, fingerprint: str, fn: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the cached (feats, labels) for `fingerprint`, else call `fn()`, store and return it."""
        if fingerprint in self:
            try:
                return self.load(fingerprint)
            except Exception as err:  # unreadable (e.g. a different torch wrote it): recompute
                warnings.warn(
                    f"feature cache entry {self.path(fingerprint)} unreadable ({err}); recomputing", stacklevel=2
                )
        feats, labels = fn()
        self.save(fingerprint, feats, labels)
        return feats, labels
