"""Small helpers shared by the interop readers and writers."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..core.checkpoint import CheckpointError, safe_load

logger = logging.getLogger("openjepa.interop")

MODULE_PREFIX = "module."
# Keys of IJEPA.arch() that describe the encoder alone.
ENCODER_ARCH_KEYS = ("patch_size", "img_size", "embed_dim", "depth", "num_heads", "mlp_ratio")
WHICH = ("target", "context")
# Our run-checkpoint / reference key of each encoder.
WHICH_KEY = {"target": "target_encoder", "context": "encoder"}


def strip_module_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Drop the DDP `module.` prefix (present on every key of reference checkpoints)."""
    return {k[len(MODULE_PREFIX) :] if k.startswith(MODULE_PREFIX) else k: v for k, v in state_dict.items()}


def add_module_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Add the DDP `module.` prefix to every key (as the reference saves its networks)."""
    return {k if k.startswith(MODULE_PREFIX) else MODULE_PREFIX + k: v for k, v in state_dict.items()}


def is_state_dict(obj: Any) -> bool:
    """A non-empty mapping of str -> tensor."""
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def check_which(which: str) -> str:
    if which not in WHICH:
        raise ValueError(f"which must be 'target' (the EMA encoder the paper evaluates) or 'context', got {which!r}")
    return which


def encoder_arch(arch: Mapping[str, Any]) -> dict[str, Any]:
    """The encoder part of an IJEPA.arch() dict, normalised (img_size as [h, w])."""
    missing = [k for k in ENCODER_ARCH_KEYS if k not in arch]
    if missing:
        raise CheckpointError(f"architecture description lacks {', '.join(missing)}: {dict(arch)}")
    out = {k: arch[k] for k in ENCODER_ARCH_KEYS}
    img = out["img_size"]
    out["img_size"] = [int(img), int(img)] if isinstance(img, (int, float)) else [int(s) for s in img]
    if len(out["img_size"]) == 1:
        out["img_size"] = out["img_size"] * 2
    for k in ("patch_size", "embed_dim", "depth", "num_heads"):
        out[k] = int(out[k])
    out["mlp_ratio"] = float(out["mlp_ratio"])
    return out


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(t.shape) if hasattr(t, "shape") else ()


def check_fits(expected: Mapping[str, Any], state_dict: Mapping[str, Any], what: str, max_items: int = 12) -> None:
    """Raise a one-line CheckpointError if `state_dict` does not match `expected` (name -> tensor/shape).

    The message lists every mismatched shape as `name: expected (..) vs got (..)`, then missing and
    unexpected keys.
    """
    exp = {k: tuple(v) if isinstance(v, (tuple, list, torch.Size)) else _shape(v) for k, v in expected.items()}
    problems = [
        f"{k}: expected {exp[k]} vs got {_shape(v)}" for k, v in state_dict.items() if k in exp and exp[k] != _shape(v)
    ]
    missing = [k for k in exp if k not in state_dict]
    unexpected = [k for k in state_dict if k not in exp]
    if not (problems or missing or unexpected):
        return
    parts = []
    if problems:
        shown = problems[:max_items]
        more = f" (and {len(problems) - max_items} more)" if len(problems) > max_items else ""
        parts.append("shape mismatch " + "; ".join(shown) + more)
    for label, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            n_shown = max(1, max_items // 2)
            more = f" (and {len(keys) - n_shown} more)" if len(keys) > n_shown else ""
            parts.append(f"{len(keys)} {label} keys: {', '.join(keys[:n_shown])}{more}")
    raise CheckpointError(f"{what}: " + " | ".join(parts))


def load_torch_file(path: str | Path) -> Any:
    """`torch.load(weights_only=True)`, memory-mapped where the file allows it (a 10 GB reference
    checkpoint then costs no RAM until its tensors are used). Unsafe pickles are refused exactly as
    `openjepa.core.checkpoint.safe_load` refuses them (CheckpointError naming arbitrary unpickling)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - unsafe, legacy (non-zip) or corrupt: let safe_load decide and word it
        return safe_load(path)
