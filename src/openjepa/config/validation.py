"""Validation: impossible values refused with a one-line ConfigError naming the key and a fix.

Generic checks come from tables (allowed strings, lower bounds, (min, max) pairs); coupled checks
cover values that are impossible only together (crop size vs patch size, mask scales vs min_keep...).
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from .parsing import plain
from .schema import BLOCK_SCALES, CHOICES, ENCODER_HEADS, OPTIONAL_CHOICES, Config, ConfigError

# key: (bound, strict) -- the value must be >= bound (> bound when strict); None values are skipped.
_LOWER_BOUNDS = {
    "meta.pred_depth": (1, False),
    "meta.pred_emb_dim": (1, False),
    "meta.predictor_heads": (1, False),
    "meta.depth": (1, False),
    "data.crop_size": (1, False),
    "data.batch_size": (1, False),
    "data.num_workers": (0, False),
    "data.color_jitter_strength": (0, False),
    "mask.patch_size": (1, False),
    "mask.num_enc_masks": (1, False),
    "mask.num_pred_masks": (1, False),
    "mask.min_keep": (0, False),
    "optimization.epochs": (1, False),
    "optimization.warmup": (0, False),
    "optimization.lr": (0, True),
    "optimization.start_lr": (0, False),
    "optimization.final_lr": (0, False),
    "optimization.ipe_scale": (0, True),
    "optimization.weight_decay": (0, False),
    "optimization.final_weight_decay": (0, False),
    "optimization.reg_final_scale": (0, False),
    "optimization.eps": (0, True),
    "optimization.grad_clip": (0, True),
    "optimization.accum_steps": (1, False),
    "optimization.max_steps": (1, False),
    "optimization.max_minutes": (0, True),
    "logging.log_freq": (1, False),
    "data.shuffle_buffer": (1, False),
    "optimization.lr_reference_batch": (1, False),
    "logging.checkpoint_every_steps": (0, False),
    "logging.checkpoint_every_epochs": (1, False),
    "logging.keep_last": (1, False),
    "logging.eval_every_epochs": (0, False),
    "logging.collapse_every_steps": (0, False),
}

# key: (allowed interval in words, test per value, must be non-decreasing, example)
_PAIRS = {
    "data.crop_scale": ("in (0, 1]", lambda v: 0 < v <= 1, True, "[0.3, 1.0]"),
    "mask.enc_mask_scale": ("in (0, 1]", lambda v: 0 < v <= 1, True, "[0.85, 1.0]"),
    "mask.pred_mask_scale": ("in (0, 1]", lambda v: 0 < v <= 1, True, "[0.15, 0.2]"),
    "mask.aspect_ratio": ("> 0", lambda v: v > 0, True, "[0.75, 1.5]"),
    "optimization.ema": ("in [0, 1]", lambda v: 0 <= v <= 1, True, "[0.996, 1.0]"),
    "optimization.betas": ("in [0, 1)", lambda v: 0 <= v < 1, False, "[0.9, 0.999]"),
}


def _fail(key: str, value: Any, problem: str, fix: str) -> ConfigError:
    """One-line error for an impossible value: key, value, what is wrong and how to fix it."""
    return ConfigError(f"invalid config value {key}={plain(value)!r}: {problem}; {fix}")


def _get(cfg: Config, key: str) -> Any:
    """Value of a dotted key."""
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def _check_generic(cfg: Config) -> None:
    """Allowed string values, lower bounds and (min, max) pairs, from the tables above."""
    for key, allowed in CHOICES.items():
        value = _get(cfg, key)
        if value is None and key in OPTIONAL_CHOICES:
            continue
        if value not in allowed:
            close = difflib.get_close_matches(str(value), allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise _fail(key, value, "unknown value", f"{hint}valid: {', '.join(allowed)}")
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg.meta.device):
        raise _fail("meta.device", cfg.meta.device, "unknown device", "use auto, cpu, cuda, cuda:N or mps")
    for key, (bound, strict) in _LOWER_BOUNDS.items():
        value = _get(cfg, key)
        if value is not None and (value < bound or (strict and value == bound)):
            op = ">" if strict else ">="
            raise _fail(key, value, f"must be {op} {bound:g}", f"set {key} {op} {bound:g}")
    for key, (words, ok, ordered, example) in _PAIRS.items():
        pair = _get(cfg, key)
        if not all(ok(v) for v in pair):
            raise _fail(key, pair, f"values must be {words}", f"set {key} to e.g. {example}")
        if ordered and pair[0] > pair[1]:
            raise _fail(
                key,
                pair,
                "first value (min/start) is greater than the second",
                f"set {key} to [{pair[1]:g}, {pair[0]:g}]",
            )


def _check_coupled(cfg: Config) -> None:
    """Values that are impossible only together with others."""
    m, d, k, o = cfg.meta, cfg.data, cfg.mask, cfg.optimization
    heads = m.predictor_heads or ENCODER_HEADS[m.model_name]
    if m.pred_emb_dim % heads:
        raise _fail(
            "meta.pred_emb_dim",
            m.pred_emb_dim,
            f"not divisible by {heads} predictor heads",
            f"use a multiple of {heads} or set meta.predictor_heads to a divisor of it",
        )
    if d.crop_size % k.patch_size:
        good = max(k.patch_size, round(d.crop_size / k.patch_size) * k.patch_size)
        raise _fail(
            "data.crop_size",
            d.crop_size,
            f"not divisible by mask.patch_size={k.patch_size}",
            f"set data.crop_size to a multiple of {k.patch_size} (e.g. {good})",
        )
    if not 0.0 <= d.val_fraction < 1.0:
        raise _fail(
            "data.val_fraction",
            d.val_fraction,
            "must be in [0, 1)",
            "set data.val_fraction to e.g. 0.1 (or 0 for no validation split)",
        )
    if o.warmup > o.epochs:
        raise _fail(
            "optimization.warmup",
            o.warmup,
            f"longer than optimization.epochs={o.epochs}",
            "set optimization.warmup between 0 and optimization.epochs",
        )
    if o.clock == "time" and o.max_minutes is None:
        raise _fail(
            "optimization.clock",
            o.clock,
            "a schedule that follows the clock needs a budget",
            "set optimization.max_minutes, or optimization.clock=steps",
        )
    num_patches = (d.crop_size // k.patch_size) ** 2
    if k.min_keep >= num_patches:
        raise _fail(
            "mask.min_keep",
            k.min_keep,
            f"not below the {num_patches} patches of the grid",
            f"set mask.min_keep < {num_patches}",
        )
    if k.strategy in ("multiblock", "block"):  # a block is kept only if it has more than min_keep patches
        for key in ("mask.pred_mask_scale", "mask.enc_mask_scale"):
            scale = _get(cfg, key) if k.strategy == "multiblock" else BLOCK_SCALES[key]
            largest = int(num_patches * scale[1])
            if largest <= k.min_keep:
                raise _fail(
                    key,
                    _get(cfg, key),
                    f"the largest block ({largest} of {num_patches} patches) never exceeds mask.min_keep={k.min_keep}",
                    "raise the scale, lower mask.min_keep or use a finer patch grid",
                )


def validate(cfg: Config) -> Config:
    """Refuse impossible values with a one-line ConfigError naming the key; returns cfg."""
    _check_generic(cfg)
    _check_coupled(cfg)
    return cfg
