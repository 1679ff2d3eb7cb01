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

import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..core.hashing import fingerprint as hash_fingerprint
from .backends import BACKENDS, SearchResult, search
from .store import IndexFormatError, IndexStore
from .update import UpdateReport, embed_files, find_images, update_store

logger = logging.getLogger("openjepa.search")

__all__ = [
    "BACKENDS",
    "FingerprintMismatchError",
    "Index",
    "IndexFormatError",
    "SearchResult",
    "UpdateReport",
    "encoder_fingerprint",
]

INDEX_POOLINGS = ("avg", "avg_last4")  # one vector per image


class FingerprintMismatchError(ValueError):
    """The encoder (or pooling) differs from the one the index was built with: features would not compare."""


def encoder_fingerprint(encoder: Any) -> str:
    """The fingerprint `load_encoder` records in `encoder.meta`, or the same hash of its weights."""
    meta = getattr(encoder, "meta", None)
    if isinstance(meta, Mapping) and meta.get("fingerprint"):
        return str(meta["fingerprint"])
    return hash_fingerprint(encoder.state_dict())


def _encoder_record(encoder: Any) -> dict[str, Any]:
    """What the index remembers of its encoder: enough to load it again and to recognise it."""
    from ..interop.source import parse_encoder_source

    meta = dict(getattr(encoder, "meta", None) or {})
    source = meta.get("source")
    if (
        isinstance(source, str)
        and source.strip()
        and parse_encoder_source(source).kind == "path"
        and os.path.exists(source)
    ):
        source = os.path.abspath(source)
    return {
        "fingerprint": encoder_fingerprint(encoder),
        "source": source,
        "format": meta.get("format"),
        "which": meta.get("which"),
        "arch": meta.get("arch"),
    }


class Index:
    """L2-normalised image features with their paths, searchable by cosine similarity.

    Build with `Index.build(encoder, folder)`, update with `add`, query with `search` (features) or
    `search_images` (image files), persist with `save` / `Index.load`. `encoder` is what
    `openjepa.interop.load_encoder` returns (any module whose forward gives (B, T, D) tokens, with
    `.preprocess` and `.meta["fingerprint"]`, works). The rows and the file format live in an
    `IndexStore` (search.store), updating in search.update, searching in search.backends.
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
        """An index over given features (normalised here); `stats` are (N, 2) int64 (size, mtime_ns).

        Mostly built by `Index.build` / `Index.load`; direct use suits features computed elsewhere.
        """
        self._store = IndexStore(
            features,
            paths,
            fingerprint=fingerprint,
            pooling=pooling,
            encoder=encoder,
            stats=stats,
            dtype=dtype,
            meta=meta,
        )

    @classmethod
    def _of(cls, store: IndexStore) -> Index:
        index = cls.__new__(cls)
        index._store = store
        return index

    # ----------------------------------------------------------------------------------- basics
    def __len__(self) -> int:
        return len(self._store)

    def __repr__(self) -> str:
        return f"Index({len(self)} images, dim {self.dim}, pooling {self.pooling!r}, fingerprint {self.fingerprint!r})"

    @property
    def features(self) -> torch.Tensor:
        """(N, D) L2-normalised features as stored (float32 unless built with another dtype)."""
        return self._store.features

    @property
    def paths(self) -> list[str]:
        """The image path of each row (a copy)."""
        return self._store.paths

    @property
    def stats(self) -> torch.Tensor:
        """(N, 2) int64 (size, mtime_ns) of each row's file when it was embedded; -1 when unknown."""
        return self._store.stats

    @property
    def meta(self) -> dict[str, Any]:
        """The index's JSON-able record: encoder, pooling, dim, format, created/updated times, ..."""
        return self._store.meta

    @property
    def dtype(self) -> torch.dtype:
        """How the features are stored (float32, float16 or bfloat16)."""
        return self._store.dtype

    @property
    def dim(self) -> int:
        """Feature width D."""
        return self._store.dim

    @property
    def pooling(self) -> str:
        """ "avg" or "avg_last4": how the encoder's tokens became one feature per image."""
        return self._store.pooling

    @property
    def fingerprint(self) -> str | None:
        """Fingerprint of the encoder the index was built with."""
        return self._store.fingerprint

    def position(self, path: str | os.PathLike) -> int | None:
        """Row of an image path in the index (None if absent)."""
        row = self._store.row(os.path.abspath(os.fspath(path)))
        return row if row is not None else self._store.row(os.fspath(path))

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
                f"was built with, or build a new index (another --out)"
            )
        if pooling is not None and pooling != self.pooling:
            raise FingerprintMismatchError(
                f"the index holds {self.pooling!r}-pooled features, not {pooling!r}; "
                f"use pooling={self.pooling!r} or build a new index"
            )

    def load_encoder(self, checkpoint: str | None = None, device: str | torch.device = "cpu") -> Any:
        """Load the encoder the index was built with (or `checkpoint`), checking its fingerprint."""
        from ..interop.source import parse_encoder_source, resolve_encoder

        rec = self.meta.get("encoder") or {}
        source = checkpoint or rec.get("source")
        if not source:
            raise ValueError("the index does not record its encoder; pass the checkpoint it was built with")
        src = parse_encoder_source(source)
        arch = rec.get("arch") or {}
        kwargs: dict[str, Any] = {}
        if src.kind == "random" and arch:
            # A random-init baseline is rebuilt from its recorded shape (same seed, same weights).
            kwargs = {
                "random_arch": {
                    "patch_size": arch["patch_size"],
                    "img_size": arch["img_size"][0],
                    "depth": arch["depth"],
                },
                "num_heads": arch["num_heads"],
            }
        elif rec.get("format") in ("hf", "timm", "safetensors") and arch.get("num_heads"):
            kwargs = {"num_heads": arch["num_heads"]}
        which = str(rec["which"]) if rec.get("which") in ("target", "context") else "target"
        if src.kind == "path" and not os.path.exists(source):
            raise FileNotFoundError(
                f"the index was built with {source}, which no longer exists; pass its new location (--checkpoint)"
            )
        enc = resolve_encoder(src, which=which, device=device, **kwargs)
        self.check_encoder(enc)
        return enc

    # ------------------------------------------------------------------------------ build/update
    @classmethod
    def build(
        cls,
        encoder: Any,
        images: Any,
        *,
        pooling: str = "avg",
        batch_size: int = 64,
        num_workers: int = 0,
        extensions: Iterable[str] | None = None,
        dtype: torch.dtype = torch.float32,
        progress: bool = True,
        save_to: str | os.PathLike | None = None,
        save_every: int = 20000,
    ) -> Index:
        """Embed every image under `images` (a folder, a file, or a list of them) into a new index.

        Unreadable files are skipped and listed in `index.last_report.skipped`. save_to: also save
        the index there every `save_every` embedded images (and at the end), so that an interrupted
        build resumes, through `add`, where it stopped.
        """
        if pooling not in INDEX_POOLINGS:
            raise ValueError(f"an index holds one vector per image: pooling 'avg' or 'avg_last4', not {pooling!r}")
        index = cls(None, [], encoder=_encoder_record(encoder), pooling=pooling, dtype=dtype, meta={"dim": 0})
        index.add(
            encoder,
            images,
            batch_size=batch_size,
            num_workers=num_workers,
            extensions=extensions,
            progress=progress,
            save_to=save_to,
            save_every=save_every,
            _require_files=True,
        )
        return index

    def add(
        self,
        encoder: Any,
        images: Any,
        *,
        prune: bool = False,
        batch_size: int = 64,
        num_workers: int = 0,
        extensions: Iterable[str] | None = None,
        progress: bool = True,
        save_to: str | os.PathLike | None = None,
        save_every: int = 20000,
        _require_files: bool = False,
    ) -> UpdateReport:
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
        files, roots = find_images(images, extensions, require_files=_require_files)
        save = None if save_to is None else (lambda: self.save(save_to))
        report = update_store(
            self._store,
            encoder,
            files,
            roots,
            prune=prune,
            batch_size=batch_size,
            num_workers=num_workers,
            progress=progress,
            save=save,
            save_every=save_every,
        )
        report.seconds = time.perf_counter() - t0
        self.last_report = report
        logger.info("index update: %s", report.summary())
        return report

    def add_features(self, features: Any, paths: Sequence[str], stats: Any = None) -> None:
        """Insert (or replace, for paths already present) rows given as features; they are normalised here."""
        self._store.add_features(features, paths, stats)

    def remove(self, paths: Iterable[str]) -> int:
        """Drop the entries of these paths (those absent are ignored); returns how many were dropped."""
        return self._store.remove(paths)

    # ------------------------------------------------------------------------------------ search
    def search(
        self,
        queries: Any,
        k: int = 8,
        *,
        backend: str = "torch",
        exclude: Sequence[int] | None = None,
        center: bool = False,
        device: str | torch.device | None = None,
        chunk_size: int | None = None,
        faiss_index: str = "Flat",
    ) -> SearchResult:
        """The k most cosine-similar rows of each query feature (Q, D) (or (D,)), best first.

        backend: "torch" (exact; chunked matmul + top-k on `device`, default CPU) or "faiss" (needs
        faiss-cpu/faiss-gpu; `faiss_index` is a FAISS factory string, "Flat" = exact inner product,
        e.g. "HNSW32" for approximate search). exclude: one index row per query to leave out
        (e.g. the query itself when it is in the index), -1 for none. center: cosine similarity
        after subtracting the mean feature of the index from both sides; mean-pooled ViT features
        share a large common component that squeezes all plain cosines towards 1; centring spreads
        the scores (the ranking can change too).
        """
        return search(
            self._store,
            queries,
            k,
            backend=backend,
            exclude=exclude,
            center=center,
            device=device,
            chunk_size=chunk_size,
            faiss_index=faiss_index,
        )

    def mean_feature(self) -> torch.Tensor:
        """(D,) float32 mean of the stored (normalised) features, the centre used by `search(center=True)`."""
        return self._store.mean_feature()

    def search_images(
        self,
        encoder: Any,
        images: Any,
        k: int = 8,
        *,
        exclude_self: bool = True,
        backend: str = "torch",
        batch_size: int = 64,
        device: str | torch.device | None = None,
        progress: bool = False,
        **search_kw: Any,
    ) -> SearchResult:
        """Embed query images (a file, a folder, or a list of them) with `encoder` and search.

        exclude_self: a query that is itself in the index does not return itself. Unreadable query
        files are skipped and listed in `result.skipped`; `result.queries` are the queries answered.
        """
        self.check_encoder(encoder)
        from tqdm.auto import tqdm

        files, _ = find_images(images)
        with tqdm(total=len(files), disable=not progress, desc="embed queries", dynamic_ncols=True) as bar:
            feats, ok, bad = embed_files(
                encoder, files, pooling=self.pooling, dtype=self.dtype, dim=self.dim, batch_size=batch_size, bar=bar
            )
        queries = [files[i] for i in ok]
        skipped = [(files[i], err) for i, err in bad]
        if not queries:
            return SearchResult(torch.zeros(0, k), torch.zeros(0, k, dtype=torch.long), [], [], skipped)
        rows = [self._store.row(p) for p in queries]
        exclude = [-1 if r is None else r for r in rows] if exclude_self else None
        res = self.search(feats, k, backend=backend, exclude=exclude, device=device, **search_kw)
        res.queries, res.skipped = queries, skipped
        return res

    # --------------------------------------------------------------------------------- save/load
    def save(self, path: str | os.PathLike) -> Path:
        """Write the index as one safetensors file (atomically: readers never see half a file)."""
        return self._store.save(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Index:
        """Read an index written by `save` (safetensors: no code is unpickled)."""
        return cls._of(IndexStore.load(path))
