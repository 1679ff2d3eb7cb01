"""Typed configuration for openjepa: the reference I-JEPA YAML schema, extended.

A YAML written for the reference code (sections ``meta``, ``data``, ``mask``, ``optimization``,
``logging``) loads unchanged; the extra keys are openjepa's. Defaults are the reference's
``in1k_vith14_ep300`` recipe (the paper's ViT-H/14). Loading is strict: an unknown key, a wrong
type or an impossible value raises :class:`ConfigError` with a one-line message naming the key.

    cfg = load_config("configs/demo.yaml", ["optimization.lr=5e-4", "mask.min_keep=2"])

Modules: ``schema`` (the section dataclasses and allowed values), ``parsing`` (per-value type
checks), ``loading`` (YAML, overrides, dict <-> Config, shipped recipes), ``validation``.
"""

from .loading import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    recipe_path,
    save_config,
)
from .schema import (
    BLOCK_SCALES,
    CHOICES,
    MODEL_NAMES,
    Config,
    ConfigError,
    DataConfig,
    LoggingConfig,
    MaskConfig,
    MetaConfig,
    OptimizationConfig,
)
from .validation import validate

__all__ = [
    "ConfigError",
    "Config",
    "MetaConfig",
    "DataConfig",
    "MaskConfig",
    "OptimizationConfig",
    "LoggingConfig",
    "MODEL_NAMES",
    "CHOICES",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "save_config",
    "apply_overrides",
    "validate",
    "BLOCK_SCALES",
    "recipe_path",
]
