"""Loading and saving: strict YAML parsing, dotted `section.key=value` overrides, dict <-> Config.

Every key is checked against the schema (unknown keys get a "did you mean" hint), every value against
its field type; the result is validated before it is returned.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Iterable

import yaml

from .parsing import coerce, is_optional, plain, unknown_key
from .schema import SECTION_TYPES, SECTIONS, Config, ConfigError, all_paths, field_types
from .validation import validate


def _section_from_dict(section: str, raw: Any) -> Any:
    """Build one section dataclass from a mapping (missing keys take defaults)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config section '{section}' must be a mapping of keys, got {raw!r}")
    hints = field_types(section)
    kwargs = {}
    for key, value in raw.items():
        path = f"{section}.{key}"
        if key not in hints:
            raise unknown_key(path, hints, all_paths())
        kwargs[key] = coerce(path, hints[key], value)
    return SECTION_TYPES[section](**kwargs)


def config_from_dict(d: dict | None, *, check: bool = True) -> Config:
    """Build a Config from a nested dict (strict keys and types); validate unless check=False."""
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(d).__name__}")
    for section in d:
        if section not in SECTIONS:
            raise unknown_key(str(section), SECTIONS)
    cfg = Config(**{s: _section_from_dict(s, d.get(s)) for s in SECTIONS})
    if check:
        validate(cfg)
    return cfg


def config_to_dict(cfg: Config) -> dict:
    """Nested dict of plain YAML-safe types (tuples become lists)."""
    out = {}
    for section in SECTIONS:
        sec = getattr(cfg, section)
        out[section] = {f.name: plain(getattr(sec, f.name)) for f in dataclasses.fields(sec)}
    return out


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses duplicate keys instead of keeping the last silently."""


def _no_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    """Mapping constructor that raises ConfigError on a key seen twice in the same mapping."""
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
    str_field = tp is str or (is_optional(tp) and str in typing.get_args(tp))
    if str_field and not isinstance(value, str) and not (value is None and is_optional(tp)):
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
            raise ConfigError(f"bad override {item!r}; expected 'section.key=value', e.g. 'optimization.lr=5e-4'")
        if section not in SECTIONS:
            raise unknown_key(section, SECTIONS)
        hints = field_types(section)
        if key not in hints:
            raise unknown_key(path, hints, all_paths())
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


def recipe_path(name_or_path: str | Path) -> Path:
    """A recipe file: an existing path, or the name of one shipped in configs/ (e.g. 'demo')."""
    p = Path(name_or_path)
    if p.exists():
        return p
    shipped = Path(__file__).resolve().parents[1] / "configs"  # openjepa/configs, beside this package
    for candidate in (shipped / f"{p.name}", shipped / f"{p.name}.yaml"):
        if candidate.is_file():
            return candidate
    names = sorted(q.stem for q in shipped.glob("*.yaml")) if shipped.is_dir() else []
    raise FileNotFoundError(f"config {name_or_path!r} not found; give a YAML path or one of: {', '.join(names)}")
