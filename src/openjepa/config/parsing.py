"""Strict value parsing: each YAML value checked against its field's type, and unknown-key errors.

Used by the loader (keys and values of a YAML file or override) and by validation (`plain`, to
print a value the way it was written).
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from typing import Any, Iterable

from .schema import ConfigError


def unknown_key(path: str, valid: Iterable[str], elsewhere: dict[str, str] | None = None) -> ConfigError:
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


def _type_name(tp: Any) -> str:
    """Readable name of a field type for error messages."""
    args = typing.get_args(tp)
    if is_optional(tp):
        inner = [a for a in args if a is not type(None)][0]
        return f"{_type_name(inner)} or null"
    if typing.get_origin(tp) is tuple:
        return f"list of {len(args)} {_type_name(args[0])}s"
    return getattr(tp, "__name__", str(tp))


def is_optional(tp: Any) -> bool:
    """True for Optional[X] / X | None."""
    union = typing.get_origin(tp) in (typing.Union, types.UnionType)
    return union and type(None) in typing.get_args(tp)


def _bad_type(path: str, tp: Any, value: Any) -> ConfigError:
    """Error for a value of the wrong type."""
    return ConfigError(f"config key '{path}' expects {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def coerce(path: str, tp: Any, value: Any) -> Any:
    """Check/convert one value to the field type (int->float, '1e-3'->float, list->tuple)."""
    if is_optional(tp):
        if value is None:
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)][0]
        try:
            return coerce(path, inner, value)
        except ConfigError:
            raise _bad_type(path, tp, value) from None
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise _bad_type(path, tp, value)
        return tuple(coerce(path, a, v) for a, v in zip(args, value))
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


def plain(value: Any) -> Any:
    """Tuples to lists, recursively."""
    return [plain(v) for v in value] if isinstance(value, (list, tuple)) else value
