"""The optional FAISS backend returns the same neighbours as the exact torch search (skipped without faiss)."""

from __future__ import annotations

import pytest
import torch

from openjepa.search import Index

faiss = pytest.importorskip(
    "faiss", reason="the optional FAISS backend is not installed (pip install faiss-cpu)", exc_type=ImportError
)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(40, 64, generator=g)
    db = centres.repeat_interleave(100, 0) + 0.6 * torch.randn(4000, 64, generator=g)  # clustered, like images
    q = centres[torch.arange(40) % 40] + 0.6 * torch.randn(40, 64, generator=g)
    return Index(db, [f"img{i:04d}" for i in range(len(db))]), q


@pytest.mark.parametrize("center", [False, True])
def test_faiss_flat_equals_torch(data, center):
    index, q = data
    exact = index.search(q, k=10, center=center)
    fast = index.search(q, k=10, center=center, backend="faiss")
    assert torch.equal(fast.indices, exact.indices)
    torch.testing.assert_close(fast.scores, exact.scores, rtol=0, atol=1e-5)
    assert fast.paths == exact.paths


def test_faiss_exclude_and_update(data):
    index, q = data
    ex = list(range(0, 4000, 100))
    assert torch.equal(
        index.search(q, k=5, backend="faiss", exclude=ex).indices, index.search(q, k=5, exclude=ex).indices
    )
    copy = Index(index.features[:100], index.paths[:100])
    copy.search(q[:1], k=3, backend="faiss")  # builds the cached FAISS index
    copy.add_features(q[:1], ["the-query"])  # an update must invalidate it
    assert copy.search(q[:1], k=1, backend="faiss").paths == [["the-query"]]


def test_faiss_approximate_index_finds_most_neighbours(data):
    index, q = data
    exact = index.search(q, k=10)
    approx = index.search(q, k=10, backend="faiss", faiss_index="HNSW32")
    found = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(exact.indices, approx.indices))
    recall = found / exact.indices.numel()
    assert recall > 0.9
