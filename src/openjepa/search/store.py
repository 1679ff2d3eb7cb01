"""The data of an image index and its file format: features, paths, file stats and what they were built with.

An `IndexStore` holds L2-normalised features (N, D), the path of each row, each file's (size,
mtime_ns) and a JSON-able `meta` (encoder record with its fingerprint, pooling, width, timestamps).
On disk it is one safetensors file (tensors plus a JSON header, written atomically); nothing is
ever unpickled.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core.atomic import atomic_path

__all__ = ["INDEX_FORMAT", "INDEX_VERSION", "IndexFormatError", "IndexStore", "normalise_features"]

INDEX_FORMAT = "openjepa-index"
INDEX_VERSION = "1"
_TENSORS = ("features", "paths_utf8", "paths_offsets", "file_stats")
_MEAN_BLOCK = 1 << 16  # rows summed at a time by mean_feature (bounds the float64 copy)


class IndexFormatError(ValueError):
    """A file is not a readable openjepa index (wrong format, version or inconsistent contents)."""


def normalise_features(x: Any) -> torch.Tensor:
    """(N, D) (or (D,)) finite features -> (N, D) float32 CPU rows of unit L2 norm."""
    x = torch.as_tensor(x)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"expected (N, D) features, got shape {tuple(x.shape)}")
    x = x.detach().to("cpu", torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values")
    return F.normalize(x, dim=1)


def now() -> str:
    """The current UTC time as an ISO string (seconds), as the index records it."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _checked_rows(paths: Sequence[str], n_feats: int, stats: Any) -> tuple[list[str], torch.Tensor]:
    """Paths as str and stats as (N, 2) int64 (-1 when unknown), after checking they fit `n_feats` rows."""
    paths = [str(p) for p in paths]
    if n_feats != len(paths):
        raise ValueError(f"{n_feats} feature rows but {len(paths)} paths")
    if len(set(paths)) != len(paths):
        raise ValueError("paths must be unique")
    if stats is None:
        stats = torch.full((len(paths), 2), -1, dtype=torch.int64)
    return paths, torch.as_tensor(stats, dtype=torch.int64).reshape(-1, 2)


class IndexStore:
    """Rows of normalised features with their image paths and file stats, plus the index's `meta`.

    Every change bumps `version` and empties `cache`, where derived data (the mean feature, a
    FAISS index) is kept so that it is never used stale.
    """

    def __init__(
        self,
        features: Any = None,
        paths: Sequence[str] = (),
        *,
        fingerprint: str | None = None,
        pooling: str = "avg",
        encoder: Mapping[str, Any] | None = None,
        stats: Any = None,
        dtype: torch.dtype = torch.float32,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        """Rows of given features (normalised here); `stats` are (N, 2) int64 (size, mtime_ns)."""
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"features are stored as float32, float16 or bfloat16, not {dtype}")
        if features is None:
            feats = torch.zeros(0, int((meta or {}).get("dim", 0)))
        else:
            feats = normalise_features(features)
        paths, stats = _checked_rows(paths, len(feats), stats)
        if len(stats) != len(paths):
            raise ValueError(f"{len(stats)} file stats but {len(paths)} paths")
        full = dict(meta or {})
        full.update(format=INDEX_FORMAT, format_version=INDEX_VERSION, pooling=pooling, dim=int(feats.shape[1]))
        if encoder is not None:
            full["encoder"] = dict(encoder)
        if fingerprint is not None:
            full.setdefault("encoder", {})["fingerprint"] = fingerprint
        full.setdefault("created", now())
        self._set(feats.to(dtype), paths, stats.clone(), full)

    def _set(self, feats: torch.Tensor, paths: list[str], stats: torch.Tensor, meta: dict[str, Any]) -> None:
        self._feats, self._paths, self._stats = feats, paths, stats
        self._pos = {p: i for i, p in enumerate(paths)}
        self.dtype = feats.dtype
        self.meta = meta
        self.version = 0
        self.cache: dict[Any, Any] = {}

    # ----------------------------------------------------------------------------------- reading
    def __len__(self) -> int:
        return len(self._paths)

    def __contains__(self, path: object) -> bool:
        return path in self._pos

    @property
    def features(self) -> torch.Tensor:
        """(N, D) L2-normalised features as stored (float32 unless built with another dtype)."""
        return self._feats

    @property
    def paths(self) -> list[str]:
        """The image path of each row (a copy)."""
        return list(self._paths)

    @property
    def stats(self) -> torch.Tensor:
        """(N, 2) int64 (size, mtime_ns) of each row's file when it was embedded; -1 when unknown."""
        return self._stats

    @property
    def dim(self) -> int:
        """Feature width D."""
        return int(self.meta.get("dim", self._feats.shape[1]))

    @property
    def pooling(self) -> str:
        """How the encoder's tokens became one feature per image ("avg" or "avg_last4")."""
        return str(self.meta.get("pooling", "avg"))

    @property
    def fingerprint(self) -> str | None:
        """Fingerprint of the encoder the features came from (None when not recorded)."""
        return (self.meta.get("encoder") or {}).get("fingerprint")

    def row(self, path: str) -> int | None:
        """Row of exactly this path string (None if absent)."""
        return self._pos.get(path)

    def path(self, row: int) -> str:
        """The image path of a row."""
        return self._paths[row]

    def stat(self, row: int) -> tuple[int, int]:
        """(size, mtime_ns) recorded for a row."""
        return tuple(self._stats[row].tolist())

    def mean_feature(self) -> torch.Tensor:
        """(D,) float32 mean of the stored (normalised) features, summed in float64."""
        if "mean" not in self.cache:
            total = torch.zeros(self.dim, dtype=torch.float64)
            for start in range(0, len(self), _MEAN_BLOCK):
                total += self._feats[start : start + _MEAN_BLOCK].to(torch.float64).sum(0)
            self.cache["mean"] = (total / max(len(self), 1)).float()
        return self.cache["mean"]

    # ---------------------------------------------------------------------------------- changing
    def _changed(self) -> None:
        self.version += 1
        self.cache = {}
        self.meta["updated"] = now()

    def add_features(self, features: Any, paths: Sequence[str], stats: Any = None) -> None:
        """Insert (or replace, for paths already present) rows given as features; they are normalised here."""
        feats = normalise_features(features)
        paths, stats = _checked_rows(paths, len(feats), stats)
        if len(self) and feats.shape[1] != self.dim or (not len(self) and self.dim and feats.shape[1] != self.dim):
            raise ValueError(f"features of width {feats.shape[1]} do not fit an index of width {self.dim}")
        feats = feats.to(self.dtype)
        replace = [(self._pos[p], j) for j, p in enumerate(paths) if p in self._pos]
        if replace:
            rows = torch.tensor([r for r, _ in replace])
            src = torch.tensor([j for _, j in replace])
            self._feats[rows] = feats[src]
            self._stats[rows] = stats[src]
        fresh = [j for j, p in enumerate(paths) if p not in self._pos]
        if fresh:
            sel = torch.tensor(fresh)
            base = self._feats if len(self) else self._feats.reshape(0, feats.shape[1])
            self._feats = torch.cat([base, feats[sel]])
            self._stats = torch.cat([self._stats, stats[sel]])
            for j in fresh:
                self._pos[paths[j]] = len(self._paths)
                self._paths.append(paths[j])
        self.meta["dim"] = int(self._feats.shape[1])
        self._changed()

    def remove(self, paths: Iterable[str]) -> int:
        """Drop the entries of these paths (those absent are ignored); returns how many were dropped."""
        drop = {self._pos[p] for p in paths if p in self._pos}
        if not drop:
            return 0
        keep = torch.tensor([i for i in range(len(self)) if i not in drop], dtype=torch.long)
        self._feats = self._feats[keep]
        self._stats = self._stats[keep]
        self._paths = [self._paths[i] for i in keep.tolist()]
        self._pos = {p: i for i, p in enumerate(self._paths)}
        self._changed()
        return len(drop)

    # --------------------------------------------------------------------------------- file format
    def save(self, path: str | os.PathLike) -> Path:
        """Write the rows as one safetensors file (atomically: readers never see half a file)."""
        from safetensors.torch import save_file

        from .. import __version__

        path = Path(path)
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a folder; give the index a file name, e.g. {path / 'images.index'}")
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = bytearray()
        offsets = [0]
        for p in self._paths:
            blob += p.encode("utf-8", "surrogateescape")
            offsets.append(len(blob))
        tensors = {
            "features": self._feats.contiguous(),
            "paths_utf8": torch.from_numpy(np.frombuffer(bytes(blob), dtype=np.uint8).copy()),
            "paths_offsets": torch.tensor(offsets, dtype=torch.int64),
            "file_stats": self._stats.contiguous(),
        }
        meta = {**self.meta, "n": len(self), "openjepa_version": __version__}
        header = {
            "format": "pt",
            "openjepa_format": INDEX_FORMAT,
            "format_version": INDEX_VERSION,
            "meta": json.dumps(meta, sort_keys=True),
        }
        with atomic_path(path) as tmp:
            save_file(tensors, tmp, metadata=header)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> IndexStore:
        """Read a file written by `save`, its features bit for bit (IndexFormatError when it is not one)."""
        path = Path(path)
        t, meta = _read_file(path)
        feats, off, blob = t["features"], t["paths_offsets"].tolist(), bytes(t["paths_utf8"].numpy())
        n = len(off) - 1
        if (
            feats.ndim != 2
            or len(feats) != n
            or len(t["file_stats"]) != n
            or off[0] != 0
            or off[-1] != len(blob)
            or any(b < a for a, b in pairwise(off))
        ):
            raise IndexFormatError(f"{path} is inconsistent (features {tuple(feats.shape)}, {n} paths)")
        paths = [blob[a:b].decode("utf-8", "surrogateescape") for a, b in pairwise(off)]
        store = cls.__new__(cls)
        meta.pop("n", None)
        store._set(feats, paths, t["file_stats"].to(torch.int64).reshape(-1, 2), meta)
        if len(store._pos) != n:
            raise IndexFormatError(f"{path} lists a path twice")
        return store


def _read_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, meta) of an index file, after checking its format and version."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise FileNotFoundError(f"index not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = dict(f.metadata() or {})
            if header.get("openjepa_format") != INDEX_FORMAT:
                raise IndexFormatError(f"{path} is not an openjepa image index (build one with `openjepa index`)")
            if header.get("format_version") != INDEX_VERSION:
                raise IndexFormatError(
                    f"{path} is an index of format version {header.get('format_version')}; "
                    f"this openjepa reads version {INDEX_VERSION}"
                )
            t = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 - safe_open is not iterable
        meta = json.loads(header["meta"])
    except SafetensorError as e:
        raise IndexFormatError(f"{path} is not a readable index file ({e})") from None
    except (json.JSONDecodeError, KeyError) as e:
        raise IndexFormatError(f"{path} has a damaged index header ({e})") from None
    missing = [k for k in _TENSORS if k not in t]
    if missing:
        raise IndexFormatError(f"{path} lacks {', '.join(missing)}")
    return t, meta
