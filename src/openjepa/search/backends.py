"""Searching an `IndexStore`: the exact torch search and the optional FAISS one, with their shared rules.

Both return the k best rows per query by cosine similarity (inner product of normalised rows),
optionally after centring both sides on the index's mean feature; exclusions and padding are
applied the same way whichever backend ran.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .store import IndexStore, normalise_features

__all__ = ["BACKENDS", "SearchResult", "search"]

BACKENDS = ("torch", "faiss")
_QUERY_BLOCK = 4096  # queries scored at a time by the torch backend
_SCORE_BLOCK = 1 << 26  # floats in one (queries x rows) score block: 256 MiB


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


def search(
    store: IndexStore,
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
    """The k most cosine-similar rows of `store` for each query feature (Q, D) (or (D,)), best first.

    See `Index.search` for the options.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    q = normalise_features(queries)
    if len(store) and q.shape[1] != store.dim:
        raise ValueError(f"queries have width {q.shape[1]} but the index holds width-{store.dim} features")
    mean = store.mean_feature() if center and len(store) else None
    if mean is not None:
        q = F.normalize(q - mean, dim=1)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    excl = _exclusions(exclude, len(q))
    # One extra candidate per query, so that dropping an excluded row still leaves k.
    kk = min(k + (1 if excl is not None else 0), len(store))
    if kk == 0:
        scores, idx = torch.zeros(len(q), 0), torch.zeros(len(q), 0, dtype=torch.long)
    elif backend == "torch":
        scores, idx = _search_torch(store.features, q, kk, device, chunk_size, mean)
    else:
        scores, idx = _search_faiss(store, q, kk, faiss_index, mean)
    if excl is not None:
        scores, idx = _drop_excluded(scores, idx, excl)
    scores, idx = _pad(scores[:, :k], idx[:, :k], k)
    paths = [[store.path(i) for i in row if i >= 0] for row in idx.tolist()]
    return SearchResult(scores, idx, paths)


def _exclusions(exclude: Sequence[int] | None, n_queries: int) -> torch.Tensor | None:
    """(Q,) long row to leave out per query, or None when no query excludes anything."""
    if exclude is None:
        return None
    excl = torch.as_tensor(list(exclude), dtype=torch.long).reshape(-1)
    if len(excl) != n_queries:
        raise ValueError(f"exclude needs one row per query ({n_queries}), got {len(excl)}")
    return excl if (excl >= 0).any() else None


def _search_torch(
    feats: torch.Tensor,
    q: torch.Tensor,
    k: int,
    device: str | torch.device | None,
    chunk_size: int | None,
    mean: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of q (Q, D) against feats (N, D): chunked matmul with a running best, on `device`."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    m = mean.to(dev) if mean is not None else None
    n = len(feats)
    q_block = min(len(q), _QUERY_BLOCK)
    chunk = int(chunk_size) if chunk_size else max(1024, _SCORE_BLOCK // max(q_block, 1))
    out_s, out_i = [], []
    for qs in range(0, len(q), q_block):
        qb = q[qs : qs + q_block].to(dev)
        best_s = torch.empty(len(qb), 0, device=dev)
        best_i = torch.empty(len(qb), 0, dtype=torch.long, device=dev)
        for start in range(0, n, chunk):
            block = feats[start : start + chunk].to(dev, torch.float32, non_blocking=True)
            if m is not None:
                block = F.normalize(block - m, dim=1)
            s = qb @ block.T  # (q_block, chunk)
            ts, ti = s.topk(min(k, s.shape[1]), dim=1)
            # Merge with the running best; a stable sort keeps the earlier (lower) row first on ties.
            cand_s = torch.cat([best_s, ts], dim=1)
            cand_i = torch.cat([best_i, ti + start], dim=1)
            order = torch.sort(cand_s, dim=1, descending=True, stable=True).indices[:, :k]
            best_s, best_i = cand_s.gather(1, order), cand_i.gather(1, order)
        out_s.append(best_s.cpu())
        out_i.append(best_i.cpu())
    return torch.cat(out_s), torch.cat(out_i)


def _search_faiss(
    store: IndexStore, q: torch.Tensor, k: int, spec: str, mean: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k through a FAISS index built from the store (kept in `store.cache` until the rows change)."""
    faiss = _import_faiss()
    key = (spec, mean is not None)
    cached = store.cache.get("faiss")
    if cached is None or cached[0] != key:
        rows = store.features.to(torch.float32)
        if mean is not None:
            rows = F.normalize(rows - mean, dim=1)
        xb = rows.contiguous().numpy()
        index = faiss.index_factory(store.dim, spec, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            index.train(xb)
        index.add(xb)
        cached = store.cache["faiss"] = (key, index)  # one FAISS index at a time
    d, i = cached[1].search(q.contiguous().numpy(), k)
    scores, idx = torch.from_numpy(d.copy()).float(), torch.from_numpy(i.copy()).long()
    return scores.masked_fill(idx < 0, -math.inf), idx


def _import_faiss() -> Any:
    try:
        import faiss  # an optional dependency
    except ImportError:
        raise ImportError(
            "the FAISS backend needs the faiss package: pip install faiss-cpu "
            "(or faiss-gpu); the default backend 'torch' needs nothing"
        ) from None
    return faiss


def _drop_excluded(scores: torch.Tensor, idx: torch.Tensor, excl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
