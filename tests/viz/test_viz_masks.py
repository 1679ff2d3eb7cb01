"""Mask figure and its pure overlay helper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from openjepa.viz import TARGET_COLORS, mask_overlay, plot_masks

GRID = (4, 4)
PATCH = 8  # 32 x 32 images


def _block(r0: int, c0: int, h: int, w: int, gw: int = GRID[1]) -> list[int]:
    return [r * gw + c for r in range(r0, r0 + h) for c in range(c0, c0 + w)]


def test_mask_overlay_pixels() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(60, 200, size=(32, 32, 3), dtype=np.uint8)
    ctx = _block(0, 0, 2, 2)  # top-left 2x2 patches
    tgt0 = _block(2, 2, 2, 2)  # bottom-right 2x2
    tgt1 = _block(0, 3, 1, 1)  # top-right patch
    out = mask_overlay(img, torch.tensor(ctx), [torch.tensor(tgt0), torch.tensor(tgt1)], GRID, dim=0.3, alpha=0.5)
    ref = img / 255.0
    assert out.shape == (32, 32, 3) and out.dtype == np.float64 and 0 <= out.min() <= out.max() <= 1

    # context pixels: untouched
    np.testing.assert_allclose(out[:16, :16], ref[:16, :16], atol=1e-9)
    # neither context nor target (e.g. patch (2, 0)): dimmed to 30 %
    np.testing.assert_allclose(out[16:24, 0:8], 0.3 * ref[16:24, 0:8], atol=1e-9)
    assert out[16:24, 0:8].mean() < 0.5 * ref[16:24, 0:8].mean()
    # targets: half original, half their own colour
    for sl, k in (((slice(16, 32), slice(16, 32)), 0), ((slice(0, 8), slice(24, 32)), 1)):
        color = np.asarray(TARGET_COLORS[k])
        np.testing.assert_allclose(out[sl], 0.5 * ref[sl] + 0.5 * color, atol=1e-9)
        # the tint pulls every pixel towards the target colour
        assert np.abs(out[sl] - color).mean() < np.abs(ref[sl] - color).mean()
    # the two targets get clearly different mean colours
    assert np.abs(out[16:32, 16:32].mean((0, 1)) - out[0:8, 24:32].mean((0, 1))).max() > 0.2


def test_mask_overlay_overlapping_targets_and_bad_index() -> None:
    img = np.full((32, 32, 3), 0.5)
    out = mask_overlay(img, [0], [[5], [5]], GRID, alpha=0.5)
    c0, c1 = np.asarray(TARGET_COLORS[0]), np.asarray(TARGET_COLORS[1])
    np.testing.assert_allclose(out[8, 8], 0.5 * (0.5 * 0.5 + 0.5 * c0) + 0.5 * c1)
    with pytest.raises(ValueError, match="mask indices"):
        mask_overlay(img, [16], [], GRID)


def test_mask_overlay_non_divisible_image() -> None:
    out = mask_overlay(np.ones((30, 30, 3)), list(range(16)), [], GRID)
    assert out.shape == (30, 30, 3) and np.allclose(out, 1.0)  # every pixel belongs to some patch


def test_plot_masks_png(tmp_path: Path) -> None:
    torch.manual_seed(0)
    b = 5
    images = torch.randn(b, 3, 32, 32)
    masks_enc = [torch.tensor([_block(0, 0, 2, 3)] * b)]
    masks_pred = [
        torch.tensor([_block(2, 0, 1, 2)] * b),
        torch.tensor([_block(2, 2, 2, 1)] * b),
        torch.tensor([_block(3, 0, 1, 2)] * b),
        torch.tensor([_block(0, 3, 2, 1)] * b),
    ]
    out = plot_masks(images, masks_enc, masks_pred, GRID, tmp_path / "masks.png", max_images=3)
    with Image.open(out) as im:
        im.load()
        assert im.size[0] > 400 and im.size[1] > 200
    many = plot_masks(images, masks_enc, masks_pred, GRID, tmp_path / "masks5.png", max_images=8)
    with Image.open(out) as a, Image.open(many) as c:
        assert c.size[1] > a.size[1]  # 5 images need a second row
    with pytest.raises(ValueError):
        plot_masks(images, masks_enc, [torch.tensor([[99]] * b)], GRID, tmp_path / "bad.png")
