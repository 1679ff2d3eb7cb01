"""An image similarity index: frozen-encoder features of a folder of images, searchable by cosine similarity.

    from openjepa.interop import load_encoder
    from openjepa.search import Index

    enc = load_encoder("runs/demo")                      # the frozen target encoder
    index = Index.build(enc, "photos/")                  # every image under photos/, recursively
    index.save("photos.index")
    index = Index.load("photos.index")
    index.add(enc, "photos/")                            # later: embeds only new or changed files
    hits = index.search_images(enc, "query.jpg", k=8)    # or index.search(features, k=8)
    for score, path in zip(hits.scores[0], hits.paths[0]): print(f"{score:.3f} {path}")

What is stored: L2-normalised features (N, D), the absolute path of each image with its size and
modification time (how an update tells new and changed files from unchanged ones), and the encoder's
fingerprint (a hash of its weights): an index only accepts features from the very encoder it was built
with. Files are safetensors (tensors plus a JSON header); nothing is ever unpickled.

Search is exact: a chunked matrix product with a running top-k, on CPU or GPU (about a million
images of width 1280 fit in a few GiB). The optional FAISS backend (`pip install faiss-cpu`) uses an
exact inner-product index by default (same neighbours), or any FAISS factory string (e.g. "HNSW32")
for approximate search of larger collections.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..atomic import atomic_path

logger = logging.getLogger("openjepa.search")

__all__ = ["Index", "SearchResult", "UpdateReport", "IndexFormatError", "FingerprintMismatchError",
           "image_extensions", "scan_images", "read_rgb", "BACKENDS"]

INDEX_FORMAT = "openjepa-index"
INDEX_VERSION = "1"
BACKENDS = ("torch", "faiss")
_PATHLIKE = (str, os.PathLike)

# The formats people keep photos and datasets in; only those this Pillow build can decode are used.
_COMMON_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".gif", ".tif", ".tiff",
                      ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".avif", ".heic", ".heif",
                      ".jp2", ".j2k", ".qoi")


class IndexFormatError(ValueError):
    """A file is not a readable openjepa index (wrong format, version or inconsistent contents)."""


class FingerprintMismatchError(ValueError):
    """The encoder (or pooling) differs from the one the index was built with: features would not compare."""


# ----------------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------------

def image_extensions(extra: Iterable[str] = ()) -> frozenset[str]:
    """Lower-case suffixes (with the dot) of the common image formats Pillow can open here, plus `extra`."""
    from PIL import Image

    Image.init()
    readable = {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    exts = {e for e in _COMMON_EXTENSIONS if e in readable}
    exts |= {("." + e.lstrip(".")).lower() for e in extra}
    return frozenset(exts)


def scan_images(images: Any, extensions: Iterable[str] | None = None) -> tuple[list[str], list[str]]:
    """(image files, roots) of a folder, a file, or a list of them.

    Folders are walked recursively (symlinked folders are not followed; hidden files and folders,
    e.g. `.thumbnails` or macOS `._x.jpg` files, are skipped); a file given by name is taken whatever
    its suffix. Paths are absolute and de-duplicated, in the order given (a folder's files in sorted
    order). `roots` are the absolute folders and files given, so that an update can tell which index
    entries it was asked to revisit.
    """
    items = [images] if isinstance(images, _PATHLIKE) else list(images)
    if not items:
        raise ValueError("no images given (expected a folder, an image file or a list of them)")
    exts = frozenset(extensions) if extensions is not None else image_extensions()
    found: dict[str, None] = {}  # ordered set
    roots: list[str] = []
    for item in items:
        if not isinstance(item, _PATHLIKE):
            raise TypeError(f"expected image paths or folders, got {type(item).__name__}")
        p = os.path.abspath(os.fspath(item))
        if os.path.isdir(p):
            roots.append(p)
            inside = []
            for folder, dirs, files in os.walk(p):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                inside += [os.path.join(folder, name) for name in files
                           if not name.startswith(".") and os.path.splitext(name)[1].lower() in exts]
            found.update(dict.fromkeys(sorted(inside)))
        elif os.path.isfile(p):
            roots.append(p)
            found[p] = None
        else:
            raise FileNotFoundError(f"no such image or folder: {item}")
    return list(found), roots


def read_rgb(path: str | os.PathLike, max_side: int | None = None) -> Any:
    """Decode an image file fully as an RGB PIL image (optionally shrunk to at most `max_side` pixels).

    Raises (OSError, ValueError, SyntaxError, ...) on anything Pillow cannot decode, including
    truncated files; callers that skip unreadable files catch `Exception`.
    """
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im.load()  # decode now: Image.open only reads the header
        im = ImageOps.exif_transpose(im)  # phone photos: honour the orientation tag
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            # Transparent pixels become white (as browsers show them), not whatever colour they hold.
            rgba = im.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, rgba)
        im = im.convert("RGB")
    if max_side is not None and max(im.size) > max_side:
        im.thumbnail((max_side, max_side))
    return im


class _Files(Dataset):
    """Preprocessed images by position; unreadable files come back as their error message."""

    def __init__(self, paths: Sequence[str], preprocess: Any) -> None:
        self.paths, self.preprocess = list(paths), preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return i, self.preprocess(read_rgb(self.paths[i])), None
        except Exception as e:  # noqa: BLE001 - any decode failure means "skip this file"
            return i, None, f"{type(e).__name__}: {e}".strip()


def _collate(items: list) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    ok = [(i, x) for i, x, err in items if err is None]
    bad = [(i, err) for i, x, err in items if err is not None]
    batch = torch.stack([x for _, x in ok]) if ok else None
    return [i for i, _ in ok], batch, bad


# ----------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------

@dataclass
class SearchResult:
    """Neighbours of each query, best first: `scores` (Q, k) cosine similarities, `indices` (Q, k) rows
    of the index, `paths` their image paths. With fewer than k candidates, rows are padded with
    index -1, score -inf and no path."""

    scores: torch.Tensor
    indices: torch.Tensor
    paths: list[list[str]]
    queries: list[str] = field(default_factory=list)  # the query images (search_images only)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # unreadable queries and why

    def __len__(self) -> int:
        return int(self.indices.shape[0])


@dataclass
class UpdateReport:
    """What `Index.build` / `Index.add` did to the index."""

    added: int = 0  # files new to the index, embedded
    changed: int = 0  # files whose size or modification time changed, embedded again
    unchanged: int = 0  # files already indexed as they are, not embedded
    removed: int = 0  # entries dropped: file gone (prune) or now unreadable
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): unreadable files
    seconds: float = 0.0

    @property
    def embedded(self) -> int:
        return self.added + self.changed

    def summary(self) -> str:
        return (f"{self.added} added, {self.changed} changed, {self.unchanged} unchanged, "
                f"{self.removed} removed, {len(self.skipped)} unreadable skipped ({self.seconds:.1f} s)")


# ----------------------------------------------------------------------------------------------
# the index
# ----------------------------------------------------------------------------------------------

def encoder_fingerprint(encoder: Any) -> str:
    """The fingerprint `load_encoder` records in `encoder.meta`, or the same hash of its weights."""
    meta = getattr(encoder, "meta", None)
    if isinstance(meta, Mapping) and meta.get("fingerprint"):
        return str(meta["fingerprint"])
    from ..evaluate.features import fingerprint

    return fingerprint(encoder.state_dict())


def _encoder_record(encoder: Any) -> dict[str, Any]:
    """What the index remembers of its encoder: enough to load it again and to recognise it."""
    meta = dict(getattr(encoder, "meta", None) or {})
    source = meta.get("source")
    if isinstance(source, str) and not source.startswith("random:") and os.path.exists(source):
        source = os.path.abspath(source)
    return {"fingerprint": encoder_fingerprint(encoder), "source": source, "format": meta.get("format"),
            "which": meta.get("which"), "arch": meta.get("arch")}


def _normalise(x: Any) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"expected (N, D) features, got shape {tuple(x.shape)}")
    x = x.detach().to("cpu", torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values")
    return F.normalize(x, dim=1)


def _file_stat(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return int(st.st_size), int(st.st_mtime_ns)


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


class Index:
    """L2-normalised image features with their paths, searchable by cosine similarity.

    Build with `Index.build(encoder, folder)`, update with `add`, query with `search` (features) or
    `search_images` (image files), persist with `save` / `Index.load`. `encoder` is what
    `openjepa.interop.load_encoder` returns (anything with `.preprocess`, `.embed` and
    `.meta["fingerprint"]` works).
    """

    def __init__(self, features: Any = None, paths: Sequence[str] = (), *, fingerprint: str | None = None,
                 pooling: str = "avg", encoder: Mapping[str, Any] | None = None,
                 stats: Any = None, dtype: torch.dtype = torch.float32,
                 meta: Mapping[str, Any] | None = None) -> None:
        """An index over given features (normalised here); `stats` are (N, 2) int64 (size, mtime_ns).

        Mostly built by `Index.build` / `Index.load`; direct use suits features computed elsewhere.
        """
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"features are stored as float32, float16 or bfloat16, not {dtype}")
        paths = [str(p) for p in paths]
        if features is None:
            dim = int((meta or {}).get("dim", 0))
            feats = torch.zeros(0, dim)
        else:
            feats = _normalise(features)
        if len(feats) != len(paths):
            raise ValueError(f"{len(feats)} feature rows but {len(paths)} paths")
        if len(set(paths)) != len(paths):
            raise ValueError("paths must be unique")
        if stats is None:
            stats = torch.full((len(paths), 2), -1, dtype=torch.int64)
        stats = torch.as_tensor(stats, dtype=torch.int64).reshape(-1, 2)
        if len(stats) != len(paths):
            raise ValueError(f"{len(stats)} file stats but {len(paths)} paths")
        self._feats = feats.to(dtype)
        self._paths = paths
        self._stats = stats.clone()
        self._pos = {p: i for i, p in enumerate(paths)}
        self.dtype = dtype
        self.meta: dict[str, Any] = dict(meta or {})
        self.meta.update(format=INDEX_FORMAT, format_version=INDEX_VERSION, pooling=pooling,
                         dim=int(feats.shape[1]))
        if encoder is not None:
            self.meta["encoder"] = dict(encoder)
        if fingerprint is not None:
            self.meta.setdefault("encoder", {})["fingerprint"] = fingerprint
        self.meta.setdefault("created", _now())
        self._version = 0
        self._faiss_cache: tuple[Any, ...] | None = None

    # ----------------------------------------------------------------------------------- basics
    def __len__(self) -> int:
        return len(self._paths)

    def __repr__(self) -> str:
        return (f"Index({len(self)} images, dim {self.dim}, pooling {self.pooling!r}, "
                f"fingerprint {self.fingerprint!r})")

    @property
    def features(self) -> torch.Tensor:
        """(N, D) L2-normalised features as stored (float32 unless built with another dtype)."""
        return self._feats

    @property
    def paths(self) -> list[str]:
        """The image path of each row (a copy)."""
        return list(self._paths)

    @property
    def dim(self) -> int:
        return int(self.meta.get("dim", self._feats.shape[1]))

    @property
    def pooling(self) -> str:
        return str(self.meta.get("pooling", "avg"))

    @property
    def fingerprint(self) -> str | None:
        return (self.meta.get("encoder") or {}).get("fingerprint")

    def position(self, path: str | os.PathLike) -> int | None:
        """Row of an image path in the index (None if absent)."""
        return self._pos.get(os.path.abspath(os.fspath(path)), self._pos.get(os.fspath(path)))

    def _changed(self) -> None:
        self._version += 1
        self._faiss_cache = None
        self.meta["updated"] = _now()

    # ---------------------------------------------------------------------------------- encoder
    def check_encoder(self, encoder: Any, pooling: str | None = None) -> None:
        """Raise FingerprintMismatchError unless `encoder` (and `pooling`) are the ones the index was built with."""
        want, got = self.fingerprint, encoder_fingerprint(encoder)
        if want is not None and want != got:
            built = (self.meta.get("encoder") or {}).get("source") or "another encoder"
            src = (getattr(encoder, "meta", None) or {}).get("source", "this encoder")
            raise FingerprintMismatchError(
                f"the index was built with {built} (weights fingerprint {want}), but {src} has fingerprint "
                f"{got}: features of different encoders are not comparable. Use the checkpoint the index "
                f"was built with, or build a new index (another --out)")
        if pooling is not None and pooling != self.pooling:
            raise FingerprintMismatchError(f"the index holds {self.pooling!r}-pooled features, not {pooling!r}; "
                                           f"use pooling={self.pooling!r} or build a new index")

    def load_encoder(self, checkpoint: str | None = None, device: str | torch.device = "cpu") -> Any:
        """Load the encoder the index was built with (or `checkpoint`), checking its fingerprint."""
        import inspect

        from ..interop import load_encoder

        rec = self.meta.get("encoder") or {}
        source = checkpoint or rec.get("source")
        if not source:
            raise ValueError("the index does not record its encoder; pass the checkpoint it was built with")
        arch = rec.get("arch") or {}
        kwargs: dict[str, Any] = {}
        if str(source).startswith("random:") and arch:
            kwargs = {"patch_size": arch["patch_size"], "img_size": arch["img_size"][0],
                      "num_heads": arch["num_heads"]}
            if "depth" in inspect.signature(load_encoder).parameters:
                kwargs["depth"] = arch["depth"]
            elif not checkpoint:
                enc = _random_encoder(str(source), arch, device)
                if enc is not None:
                    self.check_encoder(enc)
                    return enc
        elif rec.get("format") in ("hf", "timm", "safetensors") and arch.get("num_heads"):
            kwargs = {"num_heads": arch["num_heads"]}
        which = rec.get("which") if rec.get("which") in ("target", "context") else "target"
        if not str(source).startswith("random:") and not os.path.exists(source):
            raise FileNotFoundError(f"the index was built with {source}, which no longer exists; "
                                    f"pass its new location (--checkpoint)")
        enc = load_encoder(source, which=which, device=device, **kwargs)
        self.check_encoder(enc)
        return enc

    # ------------------------------------------------------------------------------ build/update
    @classmethod
    def build(cls, encoder: Any, images: Any, *, pooling: str = "avg", batch_size: int = 64,
              num_workers: int = 0, extensions: Iterable[str] | None = None, dtype: torch.dtype = torch.float32,
              progress: bool = True, save_to: str | os.PathLike | None = None,
              save_every: int = 20000) -> "Index":
        """Embed every image under `images` (a folder, a file, or a list of them) into a new index.

        Unreadable files are skipped and listed in `index.last_report.skipped`. save_to: also save
        the index there every `save_every` embedded images (and at the end), so that an interrupted
        build resumes, through `add`, where it stopped.
        """
        if pooling not in ("avg", "avg_last4"):
            raise ValueError(f"an index holds one vector per image: pooling 'avg' or 'avg_last4', not {pooling!r}")
        index = cls(None, [], encoder=_encoder_record(encoder), pooling=pooling, dtype=dtype,
                    meta={"dim": 0})
        index.add(encoder, images, batch_size=batch_size, num_workers=num_workers, extensions=extensions,
                  progress=progress, save_to=save_to, save_every=save_every, _require_files=True)
        return index

    def add(self, encoder: Any, images: Any, *, prune: bool = False, batch_size: int = 64, num_workers: int = 0,
            extensions: Iterable[str] | None = None, progress: bool = True,
            save_to: str | os.PathLike | None = None, save_every: int = 20000,
            _require_files: bool = False) -> UpdateReport:
        """Bring the index up to date with `images` (a folder, a file, or a list of them).

        Only files that are new, or whose size or modification time changed, are embedded; the rest
        keep their features. prune: also drop entries under the given folders whose file is gone.
        An entry whose file changed and can no longer be decoded is dropped. The encoder must be the
        one the index was built with (FingerprintMismatchError otherwise). save_to: save the index
        there every `save_every` embedded images and at the end (an interrupted run loses at most
        that much work). The report is returned and kept as `self.last_report`.
        """
        t0 = time.perf_counter()
        self.check_encoder(encoder)
        exts = frozenset(extensions) if extensions is not None else image_extensions()
        files, roots = scan_images(images, exts)
        if _require_files and not files:
            raise ValueError(f"no image files ({' '.join(sorted(exts))}) found under {', '.join(roots)}")
        report = UpdateReport()
        todo: list[str] = []
        todo_stats: list[tuple[int, int]] = []
        for path in files:
            try:
                st = _file_stat(path)
            except OSError as e:
                report.skipped.append((path, f"{type(e).__name__}: {e}"))
                continue
            pos = self._pos.get(path)
            if pos is not None and tuple(self._stats[pos].tolist()) == st:
                report.unchanged += 1
                continue
            todo.append(path)
            todo_stats.append(st)
        if prune:
            present = set(files)
            gone = [p for p in self._paths if _under(p, roots) and p not in present]
            report.removed += self.remove(gone)

        from tqdm.auto import tqdm

        step = max(1, int(save_every)) if save_to is not None else max(1, len(todo))
        with tqdm(total=len(todo), disable=not progress or not todo, desc=f"embed {len(todo)} images",
                  dynamic_ncols=True, unit="img") as bar:
            for start in range(0, len(todo), step):
                part, part_stats = todo[start:start + step], todo_stats[start:start + step]
                feats, ok, bad = self._embed(encoder, part, batch_size, num_workers, bar)
                for i, err in bad:
                    report.skipped.append((part[i], err))
                    logger.warning("skipping unreadable image %s (%s)", part[i], err)
                report.removed += self.remove([part[i] for i, _ in bad if part[i] in self._pos])
                new_paths = [part[i] for i in ok]
                changed = sum(p in self._pos for p in new_paths)
                report.changed += changed
                report.added += len(new_paths) - changed
                if new_paths:
                    self.add_features(feats, new_paths, stats=[part_stats[i] for i in ok])
                if save_to is not None and start + step < len(todo):
                    self.save(save_to)
        if save_to is not None:
            self.save(save_to)
        report.skipped.sort()
        report.seconds = time.perf_counter() - t0
        self.last_report = report
        logger.info("index update: %s", report.summary())
        return report

    def _embed(self, encoder: Any, paths: list[str], batch_size: int, num_workers: int, bar: Any = None
               ) -> tuple[torch.Tensor, list[int], list[tuple[int, str]]]:
        """(features of the readable files, their positions in `paths`, [(position, error)])."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        loader = DataLoader(_Files(paths, encoder.preprocess), batch_size=batch_size, shuffle=False,
                            num_workers=num_workers, collate_fn=_collate)
        chunks: list[torch.Tensor] = []
        ok: list[int] = []
        bad: list[tuple[int, str]] = []
        for idx, batch, errors in loader:
            bad.extend(errors)
            if batch is not None:
                out = encoder.embed(batch, batch_size=len(batch), pooling=self.pooling, progress=False)
                chunks.append(_normalise(out).to(self.dtype))
                ok.extend(idx)
            if bar is not None:
                bar.update(len(idx) + len(errors))
        feats = torch.cat(chunks) if chunks else torch.zeros(0, self.dim)
        return feats, ok, bad

    def add_features(self, features: Any, paths: Sequence[str], stats: Any = None) -> None:
        """Insert (or replace, for paths already present) rows given as features; they are normalised here."""
        feats = _normalise(features)
        paths = [str(p) for p in paths]
        if len(feats) != len(paths):
            raise ValueError(f"{len(feats)} feature rows but {len(paths)} paths")
        if len(set(paths)) != len(paths):
            raise ValueError("paths must be unique")
        if len(self) and feats.shape[1] != self.dim or (not len(self) and self.dim and feats.shape[1] != self.dim):
            raise ValueError(f"features of width {feats.shape[1]} do not fit an index of width {self.dim}")
        if stats is None:
            stats = torch.full((len(paths), 2), -1, dtype=torch.int64)
        stats = torch.as_tensor(stats, dtype=torch.int64).reshape(-1, 2)
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

    # ------------------------------------------------------------------------------------ search
    def search(self, queries: Any, k: int = 8, *, backend: str = "torch", exclude: Sequence[int] | None = None,
               center: bool = False, device: str | torch.device | None = None, chunk_size: int | None = None,
               faiss_index: str = "Flat") -> SearchResult:
        """The k most cosine-similar rows of each query feature (Q, D) (or (D,)), best first.

        backend: "torch" (exact; chunked matmul + top-k on `device`, default CPU) or "faiss" (needs
        faiss-cpu/faiss-gpu; `faiss_index` is a FAISS factory string, "Flat" = exact inner product,
        e.g. "HNSW32" for approximate search). exclude: one index row per query to leave out
        (e.g. the query itself when it is in the index), -1 for none. center: cosine similarity
        after subtracting the mean feature of the index from both sides; mean-pooled ViT features
        share a large common component that squeezes all plain cosines towards 1; centring spreads
        the scores (the ranking can change too).
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        q = _normalise(queries)
        if len(self) and q.shape[1] != self.dim:
            raise ValueError(f"queries have width {q.shape[1]} but the index holds width-{self.dim} features")
        mean = self.mean_feature() if center and len(self) else None
        if mean is not None:
            q = F.normalize(q - mean, dim=1)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        excl = None
        if exclude is not None:
            excl = torch.as_tensor(list(exclude), dtype=torch.long).reshape(-1)
            if len(excl) != len(q):
                raise ValueError(f"exclude needs one row per query ({len(q)}), got {len(excl)}")
            if not (excl >= 0).any():
                excl = None
        kk = min(k + (1 if excl is not None else 0), len(self))
        if kk == 0:
            scores, idx = torch.zeros(len(q), 0), torch.zeros(len(q), 0, dtype=torch.long)
        elif backend == "torch":
            scores, idx = self._search_torch(q, kk, device, chunk_size, mean)
        else:
            scores, idx = self._search_faiss(q, kk, faiss_index, mean)
        if excl is not None:
            scores, idx = _drop_excluded(scores, idx, excl)
        scores, idx = _pad(scores[:, :k], idx[:, :k], k)
        paths = [[self._paths[i] for i in row if i >= 0] for row in idx.tolist()]
        return SearchResult(scores, idx, paths)

    def mean_feature(self) -> torch.Tensor:
        """(D,) float32 mean of the stored (normalised) features, the centre used by `search(center=True)`."""
        if getattr(self, "_mean_cache", (None,))[0] != self._version:
            total = torch.zeros(self.dim, dtype=torch.float64)
            for start in range(0, len(self), 1 << 16):
                total += self._feats[start:start + (1 << 16)].to(torch.float64).sum(0)
            self._mean_cache = (self._version, (total / max(len(self), 1)).float())
        return self._mean_cache[1]

    def _search_torch(self, q: torch.Tensor, k: int, device: str | torch.device | None,
                      chunk_size: int | None, mean: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        dev = torch.device(device) if device is not None else torch.device("cpu")
        m = mean.to(dev) if mean is not None else None
        n = len(self)
        q_block = min(len(q), 4096)
        # Bound the (queries x rows) score block at ~64 Mi floats (256 MiB).
        chunk = int(chunk_size) if chunk_size else max(1024, (1 << 26) // max(q_block, 1))
        out_s, out_i = [], []
        for qs in range(0, len(q), q_block):
            qb = q[qs:qs + q_block].to(dev)
            best_s = torch.empty(len(qb), 0, device=dev)
            best_i = torch.empty(len(qb), 0, dtype=torch.long, device=dev)
            for start in range(0, n, chunk):
                block = self._feats[start:start + chunk].to(dev, torch.float32, non_blocking=True)
                if m is not None:
                    block = F.normalize(block - m, dim=1)
                s = qb @ block.T
                ts, ti = s.topk(min(k, s.shape[1]), dim=1)
                # Merge with the running best; a stable sort keeps the earlier (lower) row first on ties.
                cand_s = torch.cat([best_s, ts], dim=1)
                cand_i = torch.cat([best_i, ti + start], dim=1)
                order = torch.sort(cand_s, dim=1, descending=True, stable=True).indices[:, :k]
                best_s, best_i = cand_s.gather(1, order), cand_i.gather(1, order)
            out_s.append(best_s.cpu())
            out_i.append(best_i.cpu())
        return torch.cat(out_s), torch.cat(out_i)

    def _search_faiss(self, q: torch.Tensor, k: int, spec: str, mean: torch.Tensor | None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        faiss = _import_faiss()
        key = (self._version, spec, mean is not None)
        if self._faiss_cache is None or self._faiss_cache[:3] != key:
            xb = self._feats.to(torch.float32)
            if mean is not None:
                xb = F.normalize(xb - mean, dim=1)
            xb = xb.contiguous().numpy()
            index = faiss.index_factory(self.dim, spec, faiss.METRIC_INNER_PRODUCT)
            if not index.is_trained:
                index.train(xb)
            index.add(xb)
            self._faiss_cache = (*key, index)
        index = self._faiss_cache[3]
        d, i = index.search(q.contiguous().numpy(), k)
        scores, idx = torch.from_numpy(d.copy()).float(), torch.from_numpy(i.copy()).long()
        return scores.masked_fill(idx < 0, -math.inf), idx

    def search_images(self, encoder: Any, images: Any, k: int = 8, *, exclude_self: bool = True,
                      backend: str = "torch", batch_size: int = 64, device: str | torch.device | None = None,
                      progress: bool = False, **search_kw: Any) -> SearchResult:
        """Embed query images (a file, a folder, or a list of them) with `encoder` and search.

        exclude_self: a query that is itself in the index does not return itself. Unreadable query
        files are skipped and listed in `result.skipped`; `result.queries` are the queries answered.
        """
        self.check_encoder(encoder)
        from tqdm.auto import tqdm

        files, _ = scan_images(images)
        with tqdm(total=len(files), disable=not progress, desc="embed queries", dynamic_ncols=True) as bar:
            feats, ok, bad = self._embed(encoder, files, batch_size, 0, bar)
        queries = [files[i] for i in ok]
        skipped = [(files[i], err) for i, err in bad]
        if not queries:
            empty = SearchResult(torch.zeros(0, k), torch.zeros(0, k, dtype=torch.long), [], [], skipped)
            return empty
        exclude = [self._pos.get(p, -1) for p in queries] if exclude_self else None
        res = self.search(feats, k, backend=backend, exclude=exclude, device=device, **search_kw)
        res.queries, res.skipped = queries, skipped
        return res

    # --------------------------------------------------------------------------------- save/load
    def save(self, path: str | os.PathLike) -> Path:
        """Write the index as one safetensors file (atomically: readers never see half a file)."""
        from safetensors.torch import save_file

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
        from .. import __version__

        meta = {**self.meta, "n": len(self), "openjepa_version": __version__}
        header = {"format": "pt", "openjepa_format": INDEX_FORMAT, "format_version": INDEX_VERSION,
                  "meta": json.dumps(meta, sort_keys=True)}
        with atomic_path(path) as tmp:
            save_file(tensors, tmp, metadata=header)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Index":
        """Read an index written by `save` (safetensors: no code is unpickled)."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"index not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                header = dict(f.metadata() or {})
                if header.get("openjepa_format") != INDEX_FORMAT:
                    raise IndexFormatError(f"{path} is not an openjepa image index "
                                           f"(build one with `openjepa index`)")
                if header.get("format_version") != INDEX_VERSION:
                    raise IndexFormatError(f"{path} is an index of format version {header.get('format_version')}; "
                                           f"this openjepa reads version {INDEX_VERSION}")
                t = {name: f.get_tensor(name) for name in f.keys()}
            meta = json.loads(header["meta"])
        except SafetensorError as e:
            raise IndexFormatError(f"{path} is not a readable index file ({e})") from None
        except (json.JSONDecodeError, KeyError) as e:
            raise IndexFormatError(f"{path} has a damaged index header ({e})") from None
        missing = [k for k in ("features", "paths_utf8", "paths_offsets", "file_stats") if k not in t]
        if missing:
            raise IndexFormatError(f"{path} lacks {', '.join(missing)}")
        feats, off, blob = t["features"], t["paths_offsets"].tolist(), bytes(t["paths_utf8"].numpy())
        n = len(off) - 1
        if (feats.ndim != 2 or len(feats) != n or len(t["file_stats"]) != n or off[0] != 0
                or off[-1] != len(blob) or any(b < a for a, b in zip(off, off[1:]))):
            raise IndexFormatError(f"{path} is inconsistent (features {tuple(feats.shape)}, {n} paths)")
        paths = [blob[a:b].decode("utf-8", "surrogateescape") for a, b in zip(off, off[1:])]
        index = cls.__new__(cls)
        index._feats = feats
        index._paths = paths
        index._stats = t["file_stats"].to(torch.int64).reshape(-1, 2)
        index._pos = {p: i for i, p in enumerate(paths)}
        if len(index._pos) != n:
            raise IndexFormatError(f"{path} lists a path twice")
        index.dtype = feats.dtype
        meta.pop("n", None)
        index.meta = meta
        index._version = 0
        index._faiss_cache = None
        return index


def _random_encoder(source: str, arch: Mapping[str, Any], device: str | torch.device) -> Any:
    """A random-init encoder of a preset at a non-preset depth (`--depth`), initialised as load_encoder's
    random:<name> (seed 0); None when the depth is the preset's (load_encoder builds that itself).
    The caller checks the fingerprint, so a different initialisation can only be refused, never used."""
    from ..evaluate.features import fingerprint
    from ..interop import Encoder
    from ..models.registry import ENCODER_SPECS

    spec = ENCODER_SPECS.get(source[len("random:"):])
    if spec is None or int(arch["depth"]) == spec.depth:
        return None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        enc = Encoder(arch, {"source": source, "format": "random", "which": "random"})
    enc.meta["fingerprint"] = fingerprint(enc.state_dict())
    enc.requires_grad_(False)
    return enc.to(device).eval()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _import_faiss() -> Any:
    try:
        import faiss  # noqa: PLC0415 - optional dependency
    except ImportError:
        raise ImportError("the FAISS backend needs the faiss package: pip install faiss-cpu "
                          "(or faiss-gpu); the default backend 'torch' needs nothing") from None
    return faiss


def _drop_excluded(scores: torch.Tensor, idx: torch.Tensor, excl: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove, per row, the excluded index (if present), shifting the rest left and padding the end."""
    hit = idx == excl[:, None]
    # Sorting on the hit flag (stable) moves the excluded entry to the end of its row, order kept.
    order = torch.sort(hit.to(torch.int8), dim=1, stable=True).indices
    scores, idx, hit = scores.gather(1, order), idx.gather(1, order), hit.gather(1, order)
    return scores.masked_fill(hit, -math.inf), idx.masked_fill(hit, -1)


def _pad(scores: torch.Tensor, idx: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad rows to k columns with score -inf and index -1 (fewer candidates than k)."""
    missing = k - scores.shape[1]
    if missing > 0:
        scores = torch.cat([scores, torch.full((len(scores), missing), -math.inf)], dim=1)
        idx = torch.cat([idx, torch.full((len(idx), missing), -1, dtype=torch.long)], dim=1)
    return scores, idx
