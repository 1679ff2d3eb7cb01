"""models/pooling.py: the spatial `grid_all` readout against the whole-image means it refines."""

from __future__ import annotations

import pytest
import torch

from openjepa.models.pooling import GRID, grid_means, pool_features
from openjepa.models.registry import create_encoder


def test_grid_means__average_each_quadrant_of_the_patch_grid_cell_major():
    # A 4x4 patch grid whose token value is its row index * 10 + column index, in every channel.
    rows, cols = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    tokens = (rows * 10 + cols).flatten()[None, :, None].expand(1, 16, 3)  # (1, 16, 3)
    cells = grid_means(tokens, (4, 4)).view(GRID * GRID, 3)
    # quadrants in row-major order: top-left, top-right, bottom-left, bottom-right
    expected = torch.tensor([5.5, 7.5, 25.5, 27.5])
    torch.testing.assert_close(cells, expected[:, None].expand(4, 3))


def test_grid_means__rejects_tokens_that_are_not_the_named_grid():
    with pytest.raises(ValueError, match="patch grid"):
        grid_means(torch.zeros(2, 15, 8), (4, 4))
    with pytest.raises(ValueError, match="at least"):
        grid_means(torch.zeros(2, 4, 8), (1, 4))


def test_grid_all__averages_back_to_avg_all_and_keeps_layout():
    torch.manual_seed(0)
    enc = create_encoder("vit_tiny", patch_size=4, img_size=16, depth=3).eval()
    imgs = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        grid = pool_features(enc, imgs, "grid_all")  # (2, 3 * 4 * 192)
        whole = pool_features(enc, imgs, "avg_all")  # (2, 3 * 192)
        flipped = pool_features(enc, imgs.flip(-1), "grid_all")
    assert grid.shape == (2, 3 * GRID * GRID * 192) and grid.dtype == torch.float32
    torch.testing.assert_close(grid.view(2, 3, GRID * GRID, 192).mean(2).flatten(1), whole, atol=1e-5, rtol=1e-5)
    # unlike a whole-image mean, the quadrant means tell a picture from its mirror image
    assert not torch.allclose(grid, flipped, atol=1e-3)
