"""Typed configuration for openjepa: the reference I-JEPA YAML schema, extended.

A YAML written for the reference code (sections ``meta``, ``data``, ``mask``, ``optimization``,
``logging``) loads unchanged; the extra keys are openjepa's. Defaults are the reference's
``in1k_vith14_ep300`` recipe (the paper's ViT-H/14). Loading is strict: an unknown key, a wrong
type or an impossible value raises :class:`ConfigError` with a one-line message naming the key.

    cfg = load_config("configs/demo.yaml", ["optimization.lr=5e-4", "mask.min_keep=2"])
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Tuple

import yaml

__all__ = [
    "ConfigError", "Config", "MetaConfig", "DataConfig", "MaskConfig", "OptimizationConfig",
    "LoggingConfig", "MODEL_NAMES", "CHOICES", "load_config", "config_from_dict",
    "config_to_dict", "save_config", "apply_overrides", "validate",
]


class ConfigError(ValueError):
    """A bad configuration: unknown key, wrong type or impossible value (one-line message)."""


# Encoder sizes the model registry provides, with their number of attention heads (used to check
# that the predictor width splits into heads when `meta.predictor_heads` is None). Kept here
# because config sits below `models` in the dependency order.
MODEL_NAMES = ("vit_tiny", "vit_small", "vit_base", "vit_large", "vit_huge", "vit_giant")
_ENCODER_HEADS = {"vit_tiny": 3, "vit_small": 6, "vit_base": 12, "vit_large": 16,
                  "vit_huge": 16, "vit_giant": 16}

# Allowed values of the string-valued switches, by dotted key.
CHOICES = {
    "meta.model_name": MODEL_NAMES,
    "meta.init": ("reference", "depth_scaled"),
    "mask.strategy": ("multiblock", "random", "block"),
    "mask.truncate": ("lowest", "random"),
    "optimization.loss": ("smooth_l1", "mse"),
    "optimization.on_nonfinite": ("stop", "skip"),
    "optimization.target": ("representation", "pixels"),
    "optimization.target_from": ("output", "input"),
    "optimization.lr_scaling": ("none", "linear", "sqrt"),
}

FloatPair = Tuple[float, float]


@dataclass
class MetaConfig:
    """Model choice, precision and resume (reference keys first, then openjepa's)."""

    model_name: str = "vit_huge"
    pred_depth: int = 12
    pred_emb_dim: int = 384
    use_bfloat16: bool = True
    load_checkpoint: bool = False
    read_checkpoint: Optional[str] = None
    copy_data: bool = False  # reference SLURM data copy; accepted for compatibility, ignored
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    init: str = "reference"  # reference (plain trunc-normal) | depth_scaled
    predictor_heads: Optional[int] = None  # None: the encoder's number of heads
    compile: bool = False
    depth: Optional[int] = None  # None: the preset's depth; small-scale recipes use shallower encoders
    fsdp: bool = False  # shard the three networks with FSDP2 (fully_shard) when several processes run
    activation_checkpointing: bool = False  # recompute each transformer block's activations in backward


@dataclass
class DataConfig:
    """Dataset location, crop and loader settings."""

    root_path: str = ""
    image_folder: str = "imagenet_full_size/061417/"
    subset_file: Optional[str] = None
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
    dataset: Optional[str] = None
    val_fraction: float = 0.0
    shuffle_buffer: int = 1000  # samples held by the shuffle buffer of a "shards:" dataset (per worker)


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
    warmup: int = 40
    start_lr: float = 2e-4
    lr: float = 1e-3
    final_lr: float = 1e-6
    betas: FloatPair = (0.9, 0.999)
    eps: float = 1e-8
    loss: str = "smooth_l1"
    grad_clip: Optional[float] = None
    accum_steps: int = 1
    on_nonfinite: str = "stop"
    target: str = "representation"
    target_from: str = "output"
    max_steps: Optional[int] = None  # stop early after this many optimizer steps
    max_minutes: Optional[float] = None  # stop early after this much wall-clock time
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


_SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
_SECTION_TYPES = typing.get_type_hints(Config)


def _field_types(section: str) -> dict[str, Any]:
    """Resolved type hints of one section's fields, by field name."""
    return typing.get_type_hints(_SECTION_TYPES[section])


# ----------------------------------------------------------------------------- strict parsing


def _unknown_key(path: str, valid: Iterable[str],
                 elsewhere: dict[str, str] | None = None) -> ConfigError:
    """Error for an unknown key, suggesting the closest valid one (difflib)."""
    valid = list(valid)
    section, _, name = path.rpartition(".")
    prefix = section + "." if section else ""
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    if close:
        hint = f"did you mean '{prefix}{close[0]}'?"
    elif elsewhere and name in elsewhere:
        hint = f"did you mean '{elsewhere[name]}'?"
    else:
        hint = f"valid keys{' in ' + repr(section) if section else ''}: {', '.join(valid)}"
    kind = "key" if section else "section"
    return ConfigError(f"unknown config {kind} '{path}'; {hint}")


def _all_paths() -> dict[str, str]:
    """Map every field name to its dotted path (to suggest a key put in the wrong section)."""
    return {name: f"{sec}.{name}" for sec in _SECTIONS for name in _field_types(sec)}


def _type_name(tp: Any) -> str:
    """Readable name of a field type for error messages."""
    args = typing.get_args(tp)
    if _is_optional(tp):
        inner = [a for a in args if a is not type(None)][0]
        return f"{_type_name(inner)} or null"
    if typing.get_origin(tp) is tuple:
        return f"list of {len(args)} {_type_name(args[0])}s"
    return getattr(tp, "__name__", str(tp))


def _is_optional(tp: Any) -> bool:
    """True for Optional[X] / X | None."""
    union = typing.get_origin(tp) in (typing.Union, types.UnionType)
    return union and type(None) in typing.get_args(tp)


def _bad_type(path: str, tp: Any, value: Any) -> ConfigError:
    """Error for a value of the wrong type."""
    return ConfigError(f"config key '{path}' expects {_type_name(tp)}, got {value!r} "
                       f"({type(value).__name__})")


def _coerce(path: str, tp: Any, value: Any) -> Any:
    """Check/convert one value to the field type (int->float, '1e-3'->float, list->tuple)."""
    if _is_optional(tp):
        if value is None:
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)][0]
        try:
            return _coerce(path, inner, value)
        except ConfigError:
            raise _bad_type(path, tp, value) from None
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise _bad_type(path, tp, value)
        return tuple(_coerce(path, a, v) for a, v in zip(args, value))
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        out = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
            try:
                out = float(value.strip())
            except ValueError:
                out = None
        if out is not None and math.isfinite(out):
            return out
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - only reachable if a new field type is added without support here
        raise TypeError(f"unsupported config field type {tp!r} for '{path}'")
    raise _bad_type(path, tp, value)


def _section_from_dict(section: str, raw: Any) -> Any:
    """Build one section dataclass from a mapping (missing keys take defaults)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config section '{section}' must be a mapping of keys, got {raw!r}")
    hints = _field_types(section)
    kwargs = {}
    for key, value in raw.items():
        path = f"{section}.{key}"
        if key not in hints:
            raise _unknown_key(path, hints, _all_paths())
        kwargs[key] = _coerce(path, hints[key], value)
    return _SECTION_TYPES[section](**kwargs)


def config_from_dict(d: dict | None, *, check: bool = True) -> Config:
    """Build a Config from a nested dict (strict keys and types); validate unless check=False."""
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(d).__name__}")
    for section in d:
        if section not in _SECTIONS:
            raise _unknown_key(str(section), _SECTIONS)
    cfg = Config(**{s: _section_from_dict(s, d.get(s)) for s in _SECTIONS})
    if check:
        validate(cfg)
    return cfg


def config_to_dict(cfg: Config) -> dict:
    """Nested dict of plain YAML-safe types (tuples become lists)."""
    out = {}
    for section in _SECTIONS:
        sec = getattr(cfg, section)
        out[section] = {f.name: _plain(getattr(sec, f.name)) for f in dataclasses.fields(sec)}
    return out


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


# ----------------------------------------------------------------------------- YAML and overrides


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses duplicate keys instead of keeping the last silently."""


def _no_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    keys = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in keys:
            raise ConfigError(f"duplicate config key '{key}' (line {key_node.start_mark.line + 1})")
        keys.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def _parse_override_value(tp: Any, text: str) -> Any:
    """Parse an override value with YAML; strings for str fields are taken verbatim."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    str_field = tp is str or (_is_optional(tp) and str in typing.get_args(tp))
    if str_field and not isinstance(value, str) and not (value is None and _is_optional(tp)):
        value = text  # e.g. `logging.write_tag=123` or `data.root_path=`
    return value


def apply_overrides(d: dict, overrides: Iterable[str]) -> dict:
    """Apply `section.key=value` overrides to a nested config dict (returns a new dict)."""
    out = {s: dict(v) if isinstance(v, dict) else v for s, v in (d or {}).items()}
    for item in overrides:
        text = item[2:] if item.startswith("--") else item
        path, sep, raw = text.partition("=")
        path = path.strip()
        section, dot, key = path.partition(".")
        if not sep or not dot or not key or "." in key:
            raise ConfigError(f"bad override {item!r}; expected 'section.key=value', "
                              f"e.g. 'optimization.lr=5e-4'")
        if section not in _SECTIONS:
            raise _unknown_key(section, _SECTIONS)
        hints = _field_types(section)
        if key not in hints:
            raise _unknown_key(path, hints, _all_paths())
        if not isinstance(out.get(section), dict):
            out[section] = {}
        out[section][key] = _parse_override_value(hints[key], raw.strip())
    return out


def load_config(path_or_none: str | Path | None, overrides: Iterable[str] = ()) -> Config:
    """Load a YAML config (None: defaults), apply dotted overrides, then validate."""
    d: Any = {}
    if path_or_none is not None:
        with open(path_or_none, encoding="utf-8") as f:
            try:
                d = yaml.load(f, Loader=_StrictLoader)
            except yaml.YAMLError as e:
                msg = " ".join(str(e).split())
                where = str(path_or_none)
                raise ConfigError(f"cannot parse YAML config {where!r}: {msg}") from None
        if d is None:
            d = {}
        if not isinstance(d, dict):
            raise ConfigError(f"config file {str(path_or_none)!r} must hold a mapping of sections")
    return config_from_dict(apply_overrides(d, overrides))


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the config as YAML (all keys, reference section order)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config_to_dict(cfg), f, sort_keys=False, default_flow_style=None)


# ----------------------------------------------------------------------------- validation

# key: (bound, strict) -- the value must be >= bound (> bound when strict); None values are skipped.
_LOWER_BOUNDS = {
    "meta.pred_depth": (1, False), "meta.pred_emb_dim": (1, False),
    "meta.predictor_heads": (1, False), "meta.depth": (1, False), "data.crop_size": (1, False),
    "data.batch_size": (1, False), "data.num_workers": (0, False),
    "data.color_jitter_strength": (0, False), "mask.patch_size": (1, False),
    "mask.num_enc_masks": (1, False), "mask.num_pred_masks": (1, False),
    "mask.min_keep": (0, False), "optimization.epochs": (1, False),
    "optimization.warmup": (0, False), "optimization.lr": (0, True),
    "optimization.start_lr": (0, False),
    "optimization.final_lr": (0, False), "optimization.ipe_scale": (0, True),
    "optimization.weight_decay": (0, False), "optimization.final_weight_decay": (0, False),
    "optimization.eps": (0, True), "optimization.grad_clip": (0, True),
    "optimization.accum_steps": (1, False), "optimization.max_steps": (1, False),
    "optimization.max_minutes": (0, True), "logging.log_freq": (1, False),
    "data.shuffle_buffer": (1, False), "optimization.lr_reference_batch": (1, False),
    "logging.checkpoint_every_steps": (0, False),
    "logging.checkpoint_every_epochs": (1, False), "logging.keep_last": (1, False),
    "logging.eval_every_epochs": (0, False), "logging.collapse_every_steps": (0, False),
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
    return ConfigError(f"invalid config value {key}={_plain(value)!r}: {problem}; {fix}")


def _get(cfg: Config, key: str) -> Any:
    """Value of a dotted key."""
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def _check_generic(cfg: Config) -> None:
    """Allowed string values, lower bounds and (min, max) pairs, from the tables above."""
    for key, allowed in CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            close = difflib.get_close_matches(str(value), allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise _fail(key, value, "unknown value", f"{hint}valid: {', '.join(allowed)}")
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg.meta.device):
        raise _fail("meta.device", cfg.meta.device, "unknown device",
                    "use auto, cpu, cuda, cuda:N or mps")
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
            raise _fail(key, pair, "first value (min/start) is greater than the second",
                        f"set {key} to [{pair[1]:g}, {pair[0]:g}]")


def _check_coupled(cfg: Config) -> None:
    """Values that are impossible only together with others."""
    m, d, k, o = cfg.meta, cfg.data, cfg.mask, cfg.optimization
    heads = m.predictor_heads or _ENCODER_HEADS[m.model_name]
    if m.pred_emb_dim % heads:
        raise _fail("meta.pred_emb_dim", m.pred_emb_dim,
                    f"not divisible by {heads} predictor heads",
                    f"use a multiple of {heads} or set meta.predictor_heads to a divisor of it")
    if d.crop_size % k.patch_size:
        good = max(k.patch_size, round(d.crop_size / k.patch_size) * k.patch_size)
        raise _fail("data.crop_size", d.crop_size,
                    f"not divisible by mask.patch_size={k.patch_size}",
                    f"set data.crop_size to a multiple of {k.patch_size} (e.g. {good})")
    if not 0.0 <= d.val_fraction < 1.0:
        raise _fail("data.val_fraction", d.val_fraction, "must be in [0, 1)",
                    "set data.val_fraction to e.g. 0.1 (or 0 for no validation split)")
    if o.warmup > o.epochs:
        raise _fail("optimization.warmup", o.warmup, f"longer than optimization.epochs={o.epochs}",
                    "set optimization.warmup between 0 and optimization.epochs")
    num_patches = (d.crop_size // k.patch_size) ** 2
    if k.min_keep >= num_patches:
        raise _fail("mask.min_keep", k.min_keep, f"not below the {num_patches} patches of the grid",
                    f"set mask.min_keep < {num_patches}")
    if k.strategy in ("multiblock", "block"):  # a block is kept only if it has more than min_keep patches
        for key in ("mask.pred_mask_scale", "mask.enc_mask_scale"):
            scale = _get(cfg, key) if k.strategy == "multiblock" else BLOCK_SCALES[key]
            largest = int(num_patches * scale[1])
            if largest <= k.min_keep:
                raise _fail(key, _get(cfg, key), f"the largest block ({largest} of {num_patches} "
                            f"patches) never exceeds mask.min_keep={k.min_keep}",
                            "raise the scale, lower mask.min_keep or use a finer patch grid")


def validate(cfg: Config) -> Config:
    """Refuse impossible values with a one-line ConfigError naming the key; returns cfg."""
    _check_generic(cfg)
    _check_coupled(cfg)
    return cfg


def recipe_path(name_or_path: str | Path) -> Path:
    """A recipe file: an existing path, or the name of one shipped in configs/ (e.g. 'demo')."""
    p = Path(name_or_path)
    if p.exists():
        return p
    shipped = Path(__file__).resolve().parent / "configs"
    for candidate in (shipped / f"{p.name}", shipped / f"{p.name}.yaml"):
        if candidate.is_file():
            return candidate
    names = sorted(q.stem for q in shipped.glob("*.yaml")) if shipped.is_dir() else []
    raise FileNotFoundError(f"config {name_or_path!r} not found; give a YAML path or one of: {', '.join(names)}")
