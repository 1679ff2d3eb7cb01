"""Masks: the multi-block collator (reference-faithful, vectorised), random masking, index ops."""

from .multiblock import BlockSampler, MaskSamplingError, MaskSettingsError, MultiBlockMaskCollator
from .ops import apply_masks, repeat_interleave_batch
from .random import RandomMaskCollator

__all__ = [
    "MultiBlockMaskCollator",
    "RandomMaskCollator",
    "BlockSampler",
    "MaskSettingsError",
    "MaskSamplingError",
    "apply_masks",
    "repeat_interleave_batch",
]
