"""mask.strategy picks the collator of the paper's Table 6 rows: multiblock, random, block."""

from __future__ import annotations

import pytest
import torch

from openjepa.config import ConfigError, load_config
from openjepa.masks import RandomMaskCollator
from openjepa.masks.build import build_collator

BASE = ["data.crop_size=64", "mask.patch_size=8", "mask.min_keep=4"]


def _sample(strategy: str, batch: int = 32):
    collator = build_collator(load_config(None, BASE + [f"mask.strategy={strategy}"]))
    return collator, collator.sample(batch, torch.Generator().manual_seed(0))


def test_block_strategy__one_large_target_and_the_context_is_the_rest():
    _, (masks_enc, masks_pred) = _sample("block")
    assert len(masks_enc) == 1 and len(masks_pred) == 1
    n_target = masks_pred[0].shape[1]
    assert 0.4 * 64 <= n_target <= 0.8 * 64  # one block of scale 0.6 (rounded to whole patches, as the reference)
    for ctx, tgt in zip(masks_enc[0], masks_pred[0]):
        assert not set(ctx.tolist()) & set(tgt.tolist())
    multi_targets = sum(m.shape[1] for m in _sample("multiblock")[1][1])
    assert n_target > multi_targets / 4 * 2  # far larger than one multi-block target


def test_random_strategy__uses_the_random_patch_collator():
    collator, (masks_enc, masks_pred) = _sample("random")
    assert isinstance(collator, RandomMaskCollator)
    assert masks_enc[0].shape[1] + masks_pred[0].shape[1] == 64


def test_block_strategy__refused_where_its_block_cannot_exceed_min_keep():
    with pytest.raises(ConfigError, match="mask.pred_mask_scale"):
        load_config(None, ["data.crop_size=16", "mask.patch_size=4", "mask.min_keep=9", "mask.strategy=block"])
