"""PCA colour maps, de-normalisation and the retrieval grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from openjepa.viz import IMAGENET_MEAN, IMAGENET_STD, denormalize, pca_rgb, plot_pca_maps, plot_retrieval_grid


def _two_region_features(b: int = 3, grid: tuple[int, int] = (6, 8), d: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    va, vb = torch.randn(d, generator=g), torch.randn(d, generator=g)
    h, w = grid
    f = torch.empty(b, h, w, d)
    f[:, :, : w // 2] = va
    f[:, :, w // 2 :] = vb
    f += 1e-3 * torch.randn(f.shape, generator=g)
    return f.reshape(b, h * w, d)


def test_pca_rgb_separates_two_regions() -> None:
    grid = (6, 8)
    rgb = pca_rgb(_two_region_features(grid=grid), grid)
    assert rgb.shape == (3, 6, 8, 3) and rgb.min() >= 0.0 and rgb.max() <= 1.0
    left, right = rgb[:, :, :4].reshape(-1, 3), rgb[:, :, 4:].reshape(-1, 3)
    # each half is one flat colour and the two colours are far apart
    assert left.std(0).max() < 0.05 and right.std(0).max() < 0.05
    assert np.linalg.norm(left.mean(0) - right.mean(0)) > 0.8
    # deterministic (exact eigendecomposition, fixed eigenvector signs)
    np.testing.assert_array_equal(rgb, pca_rgb(_two_region_features(grid=grid), grid))


def test_pca_rgb_three_components_use_three_channels() -> None:
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(2, 64, 16, generator=g) * torch.tensor([5.0, 4.0, 3.0] + [0.01] * 13)
    rgb = pca_rgb(feats, (8, 8))
    assert (rgb.reshape(-1, 3).std(0) > 0.1).all()  # each channel spans a real range


def test_pca_rgb_checks_token_count() -> None:
    with pytest.raises(ValueError, match="grid"):
        pca_rgb(torch.randn(1, 17, 8), (4, 4))


def test_plot_pca_maps(tmp_path: Path) -> None:
    grid = (6, 8)
    feats = _two_region_features(grid=grid)
    out = plot_pca_maps(torch.randn(3, 3, 48, 64), feats, grid, tmp_path / "pca.png")
    with Image.open(out) as im:
        im.load()
        assert im.size[0] > 300 and im.size[1] > 150


def test_denormalize_round_trip() -> None:
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, size=(2, 20, 24, 3), dtype=np.uint8)
    x = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255.0
    normed = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    back = denormalize(normed)
    assert back.dtype == np.uint8 and back.shape == (2, 20, 24, 3)
    assert np.abs(back.astype(int) - u8.astype(int)).max() <= 1
    assert denormalize(normed[0]).shape == (1, 20, 24, 3)
    # out-of-range values are clipped, not wrapped
    assert denormalize(torch.full((1, 3, 2, 2), 100.0)).min() == 255


def _retrieval(tmp_path: Path, nq: int, k: int = 4) -> tuple[int, int]:
    rng = np.random.default_rng(nq)
    queries = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(nq)]
    neighbours = [
        [
            Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)) if j % 2 else rng.random((32, 32))
            for j in range(k)
        ]
        for _ in range(nq)
    ]
    scores = [list(np.linspace(0.9, 0.5, k)) for _ in range(nq)]
    out = plot_retrieval_grid(
        queries,
        neighbours,
        scores,
        tmp_path / f"r{nq}.png",
        query_labels=list(range(nq)),
        neighbour_labels=[[0, 1, 0, 1]] * nq,
    )
    with Image.open(out) as im:
        im.load()
        return im.size


def test_retrieval_grid_height_grows(tmp_path: Path) -> None:
    w1, h1 = _retrieval(tmp_path, 1)
    w3, h3 = _retrieval(tmp_path, 3)
    assert w1 == w3 and h3 > 2 * h1


def test_retrieval_grid_validates_lengths(tmp_path: Path) -> None:
    img = np.zeros((8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError):
        plot_retrieval_grid([img], [[img, img]], [[0.9]], tmp_path / "x.png")
    with pytest.raises(ValueError):
        plot_retrieval_grid([img, img], [[img]], [[0.9]], tmp_path / "x.png")
