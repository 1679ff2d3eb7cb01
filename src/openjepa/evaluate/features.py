"""The single frozen-feature path used by every evaluation, plus an on-disk feature cache.

I-JEPA has no class token: the paper (A.2, and the maintainer in facebookresearch/ijepa#36) average
pools the target encoder's patch tokens of the last layer, or concatenates those averages for the
last 4 layers. `extract_features` produces exactly these, or all tokens for attentive probing.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..atomic import atomic_path

POOLINGS = ("avg", "avg_last4", "patch")


def _pool(encoder: nn.Module, x: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "avg":
        return encoder(x).float().mean(dim=1)
    if pooling == "avg_last4":
        layers = encoder.get_intermediate_layers(x, 4)
        # Oldest layer first, last layer last: [mean(L-3) | mean(L-2) | mean(L-1) | mean(L)].
        return torch.cat([t.float().mean(dim=1) for t in layers], dim=1)
    # All tokens are kept in half precision: (N, T, D) is T times the pooled size.
    return encoder(x).to(torch.float16)


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    dataset: Iterable,
    *,
    pooling: str = "avg",
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    amp_bf16: bool | None = None,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode a dataset of (image, label) with a frozen encoder; returns (features, labels) on CPU.

    pooling: "avg" -> (N, D) float32 token mean of the last layer; "avg_last4" -> (N, 4D) float32,
    the token means of the last 4 layers concatenated; "patch" -> (N, T, D) float16, all tokens.
    The encoder is moved to `device` (in place) and put in eval mode for the pass; its previous
    train/eval mode is restored afterwards. `dataset` may also be a ready DataLoader, used as is.
    amp_bf16: None -> bf16 autocast on CUDA only; True forces it (also on CPU); False disables it.
    Labels keep the dtype the loader collates them to (int64 class ids, or floats for regression).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    device = torch.device(device)
    use_amp = (device.type == "cuda") if amp_bf16 is None else bool(amp_bf16)
    if isinstance(dataset, DataLoader):
        loader = dataset
    else:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            pin_memory=device.type == "cuda", drop_last=False)
    try:
        total = len(loader)
    except TypeError:  # iterable datasets have no length
        total = None
    n_items = None
    try:
        n_items = len(loader.dataset)  # type: ignore[arg-type]
    except (TypeError, AttributeError):
        pass

    was_training = encoder.training
    encoder.to(device).eval()
    feats: torch.Tensor | None = None
    chunks: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    filled = 0
    try:
        for batch in tqdm(loader, total=total, disable=not progress, desc=f"features ({pooling})",
                          dynamic_ncols=True):
            images, target = batch[0], batch[1]
            images = images.to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                out = _pool(encoder, images, pooling)
            out = out.to("cpu", out.dtype if pooling == "patch" else torch.float32)
            if n_items is not None:
                # Preallocate once the per-item shape is known, so "patch" never needs a 2x-memory cat.
                if feats is None:
                    feats = torch.empty((n_items, *out.shape[1:]), dtype=out.dtype)
                feats[filled: filled + len(out)] = out
            else:
                chunks.append(out)
            filled += len(out)
            labels.append(torch.as_tensor(target).cpu())
    finally:
        encoder.train(was_training)

    if n_items is None:
        if not chunks:
            raise ValueError("dataset yielded no batches")
        feats = torch.cat(chunks)
    elif feats is None or filled != n_items:
        if feats is not None and getattr(loader, "drop_last", False) and filled < n_items:
            feats = feats[:filled].clone()  # a caller's DataLoader dropped its ragged last batch
        else:
            raise ValueError(f"dataset reported {n_items} items but yielded {filled}")
    return feats, torch.cat(labels)


def _update_hash(h: "hashlib._Hash", obj: Any) -> None:
    # Every value is prefixed by a type tag (and lengths where needed), so "1" and 1, or
    # ("ab", "c") and ("a", "bc"), cannot collide.
    if isinstance(obj, nn.Module):  # a module hashes exactly as its state dict
        _update_hash(h, obj.state_dict())
    elif isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        # Hash raw bytes of any dtype (bf16 has no numpy equivalent) by viewing them as uint8.
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        h.update(f"A{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    elif isinstance(obj, Mapping):
        h.update(f"D{len(obj)}".encode())
        # Sorted so that the hash does not depend on insertion order.
        for key in sorted(obj, key=str):
            _update_hash(h, str(key))
            _update_hash(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for item in obj:
            _update_hash(h, item)
    elif isinstance(obj, (str, Path)):
        data = str(obj).encode()
        h.update(f"S{len(data)}:".encode() + data)
    elif isinstance(obj, bytes):
        h.update(f"B{len(obj)}:".encode() + obj)
    elif obj is None or isinstance(obj, (bool, int, float, np.generic)):
        h.update(f"V{type(obj).__name__}:{obj!r}".encode())
    else:
        # repr() of arbitrary objects can embed memory addresses, which would make the cache
        # silently never hit; refuse instead.
        raise TypeError(f"cannot fingerprint object of type {type(obj).__name__}")


def fingerprint(*parts: Any, length: int = 16) -> str:
    """Short sha256 hex digest over strings, numbers, tensors (by bytes), dicts, lists and modules.

    Pass e.g. (encoder.state_dict(), "cifar100/train", "avg_last4", image_size) so that features
    are recomputed whenever the weights, data or pooling change.
    """
    h = hashlib.sha256()
    _update_hash(h, list(parts))
    return h.hexdigest()[:length]


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
        """Write an entry via a temp file in the same folder and os.replace, so readers never see half a file."""
        final = self.path(fingerprint)
        with atomic_path(final) as tmp:
            torch.save({"feats": feats.detach().cpu(), "labels": torch.as_tensor(labels).cpu()}, tmp)
        return final

    def get_or_compute(self, fingerprint: str,
                       fn: Callable[[], tuple[torch.Tensor, torch.Tensor]]
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the cached (feats, labels) for `fingerprint`, else call `fn()`, store and return it."""
        if fingerprint in self:
            try:
                return self.load(fingerprint)
            except Exception as err:  # unreadable (e.g. a different torch wrote it): recompute
                warnings.warn(f"feature cache entry {self.path(fingerprint)} unreadable ({err}); "
                              "recomputing", stacklevel=2)
        feats, labels = fn()
        self.save(fingerprint, feats, labels)
        return feats, labels
