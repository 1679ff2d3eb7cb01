"""The configuration schema: one dataclass per reference YAML section, with the reference's defaults.

Also the tables that name the allowed values (model sizes, string switches) and the per-section
type hints the strict loader checks values against.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A bad configuration: unknown key, wrong type or impossible value (one-line message)."""


# Encoder sizes the model registry provides, with their number of attention heads (used to check
# that the predictor width splits into heads when `meta.predictor_heads` is None). Kept here
# because config sits below `models` in the dependency order.
MODEL_NAMES = ("vit_tiny", "vit_small", "vit_base", "vit_large", "vit_huge", "vit_giant")
ENCODER_HEADS = {"vit_tiny": 3, "vit_small": 6, "vit_base": 12, "vit_large": 16, "vit_huge": 16, "vit_giant": 16}

# Allowed values of the string-valued switches, by dotted key.
CHOICES = {
    "meta.model_name": MODEL_NAMES,
    "meta.init": ("reference", "depth_scaled", "patch_fan_in", "xavier"),
    "meta.precision": ("auto", "fp32", "bf16", "fp16"),
    "mask.strategy": ("multiblock", "random", "block"),
    "mask.truncate": ("lowest", "random"),
    "optimization.loss": ("smooth_l1", "mse"),
    "optimization.on_nonfinite": ("stop", "skip"),
    "optimization.target": ("representation", "pixels"),
    "optimization.target_from": ("output", "input"),
    "optimization.lr_scaling": ("none", "linear", "sqrt"),
    "optimization.clock": ("steps", "time"),
}
OPTIONAL_CHOICES = frozenset({"meta.precision"})  # None allowed: derived from another key

FloatPair = tuple[float, float]


@dataclass
class MetaConfig:
    """Model choice, precision and resume (reference keys first, then openjepa's)."""

    model_name: str = "vit_huge"
    pred_depth: int = 12
    pred_emb_dim: int = 384
    use_bfloat16: bool = True  # the reference's switch; read as precision auto (true) or fp32 (false)
    # auto | fp32 | bf16 | fp16; None: from use_bfloat16. auto = bf16 where the chip has native bf16
    precision: str | None = None
    load_checkpoint: bool = False
    read_checkpoint: str | None = None
    copy_data: bool = False  # reference SLURM data copy; accepted for compatibility, ignored
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    init: str = "reference"  # reference (plain trunc-normal) | depth_scaled | patch_fan_in | xavier
    predictor_heads: int | None = None  # None: the encoder's number of heads
    compile: bool = False
    depth: int | None = None  # None: the preset's depth; small-scale recipes use shallower encoders
    fsdp: bool = False  # shard the three networks with FSDP2 (fully_shard) when several processes run
    activation_checkpointing: bool = False  # recompute each transformer block's activations in backward


@dataclass
class DataConfig:
    """Dataset location, crop and loader settings."""

    root_path: str = ""
    image_folder: str = "imagenet_full_size/061417/"
    subset_file: str | None = None
    crop_size: int = 224
    crop_scale: FloatPair = (0.3, 1.0)
    batch_size: int = 128
    num_workers: int = 10
    pin_mem: bool = True
    use_horizontal_flip: bool = False
    use_color_distortion: bool = False
    use_gaussian_blur: bool = False
    color_jitter_strength: float = 0.0
    # "x.npz", "folder:PATH" or "shapes:2000"; None: the reference root_path/image_folder
    dataset: str | None = None
    val_fraction: float = 0.0
    shuffle_buffer: int = 1000  # samples held by the shuffle buffer of a "shards:" dataset (per worker)
    # decode image files and .npz arrays together with the random crop (same boxes and flips as the
    # reference pipeline, pixels equal up to the resampling; data/fast_decode.py): about 1.4x faster
    fast_decode: bool = True


# mask.strategy=block (paper Table 6): one target of scale 0.6, the context is the rest of the image.
BLOCK_SCALES = {"mask.enc_mask_scale": (1.0, 1.0), "mask.pred_mask_scale": (0.6, 0.6)}


@dataclass
class MaskConfig:
    """Context/target block sampling (multi-block by default) and the reference-quirk switches."""

    patch_size: int = 14
    num_enc_masks: int = 1
    num_pred_masks: int = 4
    enc_mask_scale: FloatPair = (0.85, 1.0)
    pred_mask_scale: FloatPair = (0.15, 0.2)
    aspect_ratio: FloatPair = (0.75, 1.5)
    min_keep: int = 10
    allow_overlap: bool = False
    strategy: str = "multiblock"
    independent_scale_aspect: bool = False  # False: one draw sets scale and aspect (reference)
    include_last_row_col: bool = False  # False: last row/column never sampled (reference bug)
    allow_full_size_blocks: bool = False  # False: blocks at most (H-1)x(W-1) (reference)
    truncate: str = "lowest"  # how ragged context masks are cut to the batch minimum


@dataclass
class OptimizationConfig:
    """AdamW, schedules (epochs-based, as in the reference), loss and step controls."""

    ema: FloatPair = (0.996, 1.0)
    ipe_scale: float = 1.0
    weight_decay: float = 0.04
    final_weight_decay: float = 0.4
    epochs: int = 300
    warmup: float = 40  # epochs; fractional where a budget sizes the schedule in steps (train/budget.py)
    start_lr: float = 2e-4
    lr: float = 1e-3
    final_lr: float = 1e-6
    betas: FloatPair = (0.9, 0.999)
    eps: float = 1e-8
    loss: str = "smooth_l1"
    grad_clip: float | None = None
    accum_steps: int = 1
    on_nonfinite: str = "stop"
    target: str = "representation"
    target_from: str = "output"
    # Small-scale options, off in the reference recipe (models/regularizers.py, docs/results.md):
    # targets averaged over the target encoder's last k layers, and VICReg variance/covariance
    # weights on the per-image mean of the context encoder's tokens.
    target_layers: int = 1
    var_weight: float = 0.0
    cov_weight: float = 0.0
    sigreg_weight: float = 0.0  # LeJEPA's SIGReg on the same context means (models/regularizers.py)
    # The three weights above times a half-cosine from 1 to this over the schedule (1.0: constant;
    # 0.0: the terms fade out by the end, train/schedules.py)
    reg_final_scale: float = 1.0
    max_steps: int | None = None  # stop early after this many optimizer steps
    max_minutes: float | None = None  # stop early after this much wall-clock time
    # What the lr / wd / EMA schedules follow: "steps" (the reference) or "time", the share of
    # max_minutes elapsed, so a budgeted run ends its cosine and its EMA ramp as the budget ends
    # however fast its steps turn out (train/budget.py); "time" needs max_minutes.
    clock: str = "steps"
    # lr, start_lr and final_lr are the values at lr_reference_batch (the paper's global batch 2048);
    # "none" keeps them whatever the global batch (batch_size x processes x accum_steps) is, as the
    # reference does; "linear" / "sqrt" scale them by (global / reference) or its square root.
    lr_scaling: str = "none"
    lr_reference_batch: int = 2048


@dataclass
class LoggingConfig:
    """Output folder, logging cadence, checkpoints and monitors."""

    folder: str = "runs/ijepa"
    write_tag: str = "jepa"
    log_freq: int = 10
    checkpoint_every_steps: int = 0  # 0: checkpoint only at epoch ends
    checkpoint_every_epochs: int = 1  # >1 for tiny datasets on fast GPUs, where a save can outlast an epoch
    keep_last: int = 3
    eval_every_epochs: int = 0
    tensorboard: bool = True
    plots: bool = True
    collapse_every_steps: int = 50


@dataclass
class Config:
    """The whole configuration: the reference's five sections."""

    meta: MetaConfig = field(default_factory=MetaConfig)
    data: DataConfig = field(default_factory=DataConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
SECTION_TYPES = typing.get_type_hints(Config)


def field_types(section: str) -> dict[str, Any]:
    """Resolved type hints of one section's fields, by field name."""
    return typing.get_type_hints(SECTION_TYPES[section])


def all_paths() -> dict[str, str]:
    """Map every field name to its dotted path (to suggest a key put in the wrong section)."""
    return {name: f"{sec}.{name}" for sec in SECTIONS for name in field_types(sec)}
