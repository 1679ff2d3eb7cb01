"""Writing images and labels as WebDataset-style tar shards, with the sample-count index beside them."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from PIL import Image

from ..core.atomic import atomic_write_text
from .shard_files import INDEX_NAME, _read_index

__all__ = ["write_shards"]


def _encode(img: Any, fmt: str, quality: int) -> bytes:
    if isinstance(img, (bytes, bytearray, memoryview)):  # already encoded (e.g. a JPEG file's bytes): kept as is
        return bytes(img)
    if isinstance(img, torch.Tensor):
        img = img.detach().cpu().numpy()
        if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
            img = img.transpose(1, 2, 0)
    if isinstance(img, np.ndarray):
        arr = img
        if arr.dtype != np.uint8:
            arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        img = Image.fromarray(np.ascontiguousarray(arr))
    if not isinstance(img, Image.Image):
        raise TypeError(f"write_shards needs PIL images, uint8 arrays (H, W[, C]) or tensors, got {type(img).__name__}")
    buf = io.BytesIO()
    pil_fmt = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt]
    img.convert("RGB").save(buf, format=pil_fmt, **({"quality": quality} if pil_fmt in ("JPEG", "WEBP") else {}))
    return buf.getvalue()


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed metadata: same inputs, same bytes
    info.uname = info.gname = ""
    tf.addfile(info, io.BytesIO(data))


def write_shards(
    images: Iterable[Any],
    labels: Iterable[int] | None,
    folder: str | os.PathLike,
    per_shard: int = 1000,
    prefix: str = "shard",
    fmt: str = "jpg",
    quality: int = 95,
) -> list[Path]:
    """Write images (PIL, uint8 arrays or tensors) and integer labels as `{prefix}-000000.tar`, ...

    Each sample is `{index:08d}.{fmt}` plus `{index:08d}.cls`; `per_shard` samples per tar. Images
    given as `bytes` are stored unchanged (pass a JPEG file's bytes with fmt="jpg" to avoid
    re-encoding a dataset). Also writes the `openjepa-shards.json` index (sample counts, atomically)
    so readers need not scan the headers.
    Returns the shard paths; `shards:{folder}/{prefix}-{000000..N}.tar` reads them back.
    """
    fmt = fmt.lower()
    if fmt not in ("jpg", "jpeg", "png", "webp"):
        raise ValueError(f"fmt must be jpg, png or webp, got {fmt!r}")
    if per_shard < 1:
        raise ValueError(f"per_shard must be >= 1, got {per_shard}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    label_iter = iter(labels) if labels is not None else None
    paths: list[Path] = []
    counts: list[int] = []
    tf: tarfile.TarFile | None = None
    for i, img in enumerate(images):
        if i % per_shard == 0:
            if tf is not None:
                tf.close()
            paths.append(folder / f"{prefix}-{len(paths):06d}.tar")
            counts.append(0)
            tf = tarfile.open(paths[-1], "w", format=tarfile.USTAR_FORMAT)
        key = f"{i:08d}"
        _add(tf, f"{key}.{fmt}", _encode(img, fmt, quality))  # type: ignore[arg-type]
        if label_iter is not None:
            _add(tf, f"{key}.cls", str(int(next(label_iter))).encode())  # type: ignore[arg-type]
        counts[-1] += 1
    if tf is not None:
        tf.close()
    idx = _read_index(folder)
    idx.update({p.name: {"samples": c, "bytes": p.stat().st_size} for p, c in zip(paths, counts)})
    atomic_write_text(folder / INDEX_NAME, json.dumps(idx, indent=0, sort_keys=True))
    return paths
