"""Multi-block masks: reference statistics, invariants, quirks and their switches, seeding, errors."""

from __future__ import annotations

import statistics

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from openjepa.masks import MaskSettingsError, MultiBlockMaskCollator, RandomMaskCollator

PAPER = dict(
    enc_mask_scale=(0.85, 1.0),
    pred_mask_scale=(0.15, 0.2),
    aspect_ratio=(0.75, 1.5),
    nenc=1,
    npred=4,
    allow_overlap=False,
)
SETTINGS = {"224/16": (224, 16, 10), "224/14": (224, 14, 10), "32/4 (min_keep 4)": (32, 4, 4)}


def _grid(idx: torch.Tensor, n: int) -> torch.Tensor:
    out = torch.zeros(idx.shape[0], n, dtype=torch.bool)
    return out.scatter_(1, idx, True)


@pytest.mark.parametrize("key", list(SETTINGS))
def test_collator__statistics_match_reference(key, golden_stats):
    img, patch, min_keep = SETTINGS[key]
    ref = golden_stats["multiblock_mask_stats"][key]
    collator = MultiBlockMaskCollator(img, patch, min_keep=min_keep, seed=3, **PAPER)
    g = torch.Generator().manual_seed(0)
    n = collator.height * collator.width
    ctx, tgt, union, overlap = [], [], [], 0
    for _ in range(1000):
        masks_enc, masks_pred = collator.sample(ref["batch"], g)
        ctx.append(masks_enc[0].shape[1])
        tgt.append(masks_pred[0].shape[1])
        u = torch.stack([_grid(m, n) for m in masks_pred]).any(0)
        union.append(u.float().mean(1).mean().item())
        overlap += int((_grid(masks_enc[0], n) & u).sum())
    assert statistics.mean(ctx) == pytest.approx(ref["context_tokens_per_batch"]["mean"], rel=0.03)
    assert statistics.mean(tgt) == pytest.approx(ref["target_tokens_per_block_per_batch"]["mean"], rel=0.03)
    assert abs(statistics.mean(union) - ref["union_of_4_targets_fraction_of_image"]["mean"]) < 0.02
    assert overlap == ref["context_target_overlap_total"] == 0


@pytest.mark.parametrize(
    "quirks", [{}, dict(independent_scale_aspect=True, include_last_row_col=True, allow_full_size_blocks=True)]
)
def test_collator__targets_are_rectangles_within_ranges_and_context_keeps_min_keep(quirks):
    c = MultiBlockMaskCollator(224, 16, min_keep=10, seed=0, **PAPER, **quirks)
    g = torch.Generator().manual_seed(1)
    n_tok = c.height * c.width
    for _ in range(50):
        masks_enc, masks_pred = c.sample(8, g)
        assert masks_enc[0].shape[1] > c.min_keep
        union = torch.zeros(8, n_tok, dtype=torch.bool)
        for m in masks_pred:
            union |= _grid(m, n_tok)
            for row in m:
                r, col = row // c.width, row % c.width
                h, w = int(r.max() - r.min() + 1), int(col.max() - col.min() + 1)
                assert h * w == len(row), "target block is not a filled rectangle"
                assert (row == row.sort().values).all()
                area = h * w / n_tok
                # int() flooring and rounding of h, w keep the area close to the scale range
                assert 0.15 - 0.05 <= area <= 0.2 + 0.02
                assert 0.5 <= h / w <= 2.0
        assert not (_grid(masks_enc[0], n_tok) & union).any()


def test_collator__reference_quirks_by_default_context_is_top_left_15x15_on_16x16():
    c = MultiBlockMaskCollator(224, 14, min_keep=10, seed=0, **PAPER)
    g = torch.Generator().manual_seed(2)
    for _ in range(30):
        masks_enc, masks_pred = c.sample(4, g)
        for m in masks_enc + masks_pred:
            r, col = m // 16, m % 16
            assert r.max() <= 14 and col.max() <= 14, "last row/column used despite the reference quirk"


def test_collator__quirk_switches_reach_last_row_and_column():
    c = MultiBlockMaskCollator(
        224, 14, min_keep=10, seed=0, include_last_row_col=True, allow_full_size_blocks=True, **PAPER
    )
    g = torch.Generator().manual_seed(2)
    seen = torch.zeros(256, dtype=torch.bool)
    for _ in range(30):
        _, masks_pred = c.sample(8, g)
        for m in masks_pred:
            seen[m.flatten()] = True
    assert seen.view(16, 16)[15].any() and seen.view(16, 16)[:, 15].any()


def test_collator__truncation_keeps_lowest_indices_or_a_random_subset():
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, [1, 3, 5, 7]] = True
    mask[1, [0, 2, 9]] = True
    low = MultiBlockMaskCollator(32, 4, min_keep=4, **PAPER)._truncate(mask, 3, torch.Generator())
    assert low.tolist() == [[1, 3, 5], [0, 2, 9]]
    rnd = MultiBlockMaskCollator(32, 4, min_keep=4, truncate="random", **PAPER)
    picks = {tuple(rnd._truncate(mask, 2, torch.Generator().manual_seed(s))[0].tolist()) for s in range(20)}
    assert len(picks) > 1 and all(set(p) <= {1, 3, 5, 7} for p in picks)


def test_collator__same_seed_same_masks_and_batches_differ():
    def run(seed):
        c = MultiBlockMaskCollator(32, 4, min_keep=4, seed=seed, **PAPER)
        c.set_epoch(0)
        return [c([(torch.zeros(3, 32, 32), 0)] * 4) for _ in range(3)]

    a, b, other = run(0), run(0), run(1)
    for (_, ea, pa), (_, eb, pb) in zip(a, b):
        assert all(torch.equal(x, y) for x, y in zip(ea + pa, eb + pb))
    assert not torch.equal(a[0][2][0], a[1][2][0])
    assert not all(torch.equal(x[2][0], y[2][0]) for x, y in zip(a, other))


def test_collator__dataloader_workers_do_not_repeat_masks_and_match_single_process():
    ds = TensorDataset(torch.zeros(32, 3, 32, 32), torch.zeros(32, dtype=torch.long))

    def masks(workers):
        c = MultiBlockMaskCollator(32, 4, min_keep=4, seed=5, **PAPER)
        c.set_epoch(2)
        dl = DataLoader(ds, batch_size=4, collate_fn=c, num_workers=workers)
        return [torch.cat(p, 1) for _, _, p in dl]

    single, multi = masks(0), masks(2)
    assert all(torch.equal(x, y) for x, y in zip(single, multi))
    assert len({tuple(m.flatten().tolist()) for m in multi}) == len(multi)


@pytest.mark.parametrize(
    "kwargs, phrase",
    [
        (dict(min_keep=64), "min_keep"),
        (dict(min_keep=4, pred_mask_scale=(0.7, 0.8), enc_mask_scale=(0.3, 0.4)), "cannot be met"),
        (dict(min_keep=4, enc_mask_scale=(0.9, 0.8)), "enc_mask_scale"),
        (dict(min_keep=4, aspect_ratio=(0.0, 1.0)), "aspect_ratio"),
    ],
)
def test_collator__impossible_settings_raise_up_front(kwargs, phrase):
    args = {**PAPER, **kwargs}
    with pytest.raises(MaskSettingsError, match=phrase):
        MultiBlockMaskCollator(32, 4, **args)


def test_collator__image_size_not_divisible_by_patch_is_refused():
    with pytest.raises(MaskSettingsError, match="multiple of 16"):
        MultiBlockMaskCollator(200, 16, **PAPER)


def test_random_collator__context_and_target_partition_the_grid():
    c = RandomMaskCollator(32, 4, ratio=(0.4, 0.6), seed=0)
    _, masks_enc, masks_pred = c([(torch.zeros(3, 32, 32), 0)] * 3)
    both = torch.cat([masks_enc[0], masks_pred[0]], 1).sort(1).values
    assert torch.equal(both, torch.arange(64).expand(3, 64))
    assert 0.4 <= masks_pred[0].shape[1] / 64 <= 0.6 + 1 / 64
