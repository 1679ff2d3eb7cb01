"""The mask collator a config describes (mask.strategy), and the one a run folder used."""

from __future__ import annotations

from pathlib import Path

from ..config import BLOCK_SCALES, Config, load_config
from .multiblock import MultiBlockMaskCollator
from .random import RandomMaskCollator


def build_collator(cfg: Config, rank: int = 0, world_size: int = 1) -> MultiBlockMaskCollator:
    """The mask collator named by mask.strategy ('block': one 0.6-scale target, context = the rest of the image).

    Each of `world_size` ranks gets its own mask stream; rank 0 of 1 is the single-process one.
    """
    m, seed = cfg.mask, cfg.meta.seed
    if m.strategy == "random":
        collator: MultiBlockMaskCollator = RandomMaskCollator(cfg.data.crop_size, m.patch_size, seed=seed)
    else:
        enc_scale, pred_scale, npred = m.enc_mask_scale, m.pred_mask_scale, m.num_pred_masks
        if m.strategy == "block":  # paper Table 6 "block": one target of scale 0.6, the context is the rest
            enc_scale, pred_scale = BLOCK_SCALES["mask.enc_mask_scale"], BLOCK_SCALES["mask.pred_mask_scale"]
            npred = 1
        collator = MultiBlockMaskCollator(
            cfg.data.crop_size,
            m.patch_size,
            enc_scale,
            pred_scale,
            m.aspect_ratio,
            m.num_enc_masks,
            npred,
            m.min_keep,
            m.allow_overlap,
            seed=seed,
            independent_scale_aspect=m.independent_scale_aspect,
            include_last_row_col=m.include_last_row_col,
            allow_full_size_blocks=m.allow_full_size_blocks,
            truncate=m.truncate,
        )
    collator.set_rank(rank, world_size)
    return collator


def run_mask_collator(folder: Path | None, img_size: int, patch_size: int) -> tuple[MultiBlockMaskCollator, str]:
    """The run's mask collator (its params-ijepa.yaml) at the encoder's size, or the defaults."""
    params = folder / "params-ijepa.yaml" if folder is not None else None
    over = [f"data.crop_size={img_size}", f"mask.patch_size={patch_size}"]
    if params is not None and params.is_file():
        return build_collator(load_config(params, over)), f"mask settings of {params.name}"
    # No run recipe: the reference multi-block settings, with min_keep small enough for tiny grids.
    grid = (img_size // patch_size) ** 2
    return (
        build_collator(load_config(None, over + [f"mask.min_keep={min(10, max(0, grid // 16))}"])),
        "the reference's multi-block mask settings (no params-ijepa.yaml next to the checkpoint)",
    )
