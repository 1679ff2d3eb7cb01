"""Content hashes: file checksums and fingerprints of weights, data and settings (cache keys)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _update_hash(h: hashlib._Hash, obj: Any) -> None:
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
