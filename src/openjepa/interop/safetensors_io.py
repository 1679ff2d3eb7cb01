"""Encoder-only safetensors export: the encoder state dict plus its architecture in the header.

The header metadata (str -> str) holds `openjepa_format` = "openjepa-encoder", `format_version`,
`arch` (JSON of the encoder keys of IJEPA.arch()), `which` ("target" / "context") and, when known,
`source` and `fingerprint`. Loading never unpickles anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..core.checkpoint import CheckpointError
from ._util import encoder_arch, strip_module_prefix

__all__ = ["SAFETENSORS_FORMAT", "save_encoder_safetensors", "load_encoder_safetensors", "read_safetensors_metadata"]

SAFETENSORS_FORMAT = "openjepa-encoder"
SAFETENSORS_VERSION = "1"


def save_encoder_safetensors(
    state_dict: Mapping[str, torch.Tensor],
    arch: Mapping[str, Any],
    path: str | Path,
    which: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write `{encoder state dict}` to `path` with the architecture (and `which`) as metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta.update(
        {
            "format": "pt",
            "openjepa_format": SAFETENSORS_FORMAT,
            "format_version": SAFETENSORS_VERSION,
            "arch": json.dumps(encoder_arch(arch), sort_keys=True),
        }
    )
    if which is not None:
        meta["which"] = which
    tensors = {k: v.detach().contiguous() for k, v in strip_module_prefix(state_dict).items()}
    save_file(tensors, str(path), metadata=meta)
    return path


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The header metadata of a safetensors file (without reading its tensors)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_encoder_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, str]]:
    """Read an encoder export: (state dict, encoder arch, metadata)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"safetensors file not found: {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        sd = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("openjepa_format") != SAFETENSORS_FORMAT:
        raise CheckpointError(
            f"{path} is not an openjepa encoder export (no openjepa_format="
            f"{SAFETENSORS_FORMAT!r} in its metadata); for a timm state dict use "
            f"--from timm"
        )
    try:
        arch = encoder_arch(json.loads(meta["arch"]))
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path} has no readable 'arch' metadata ({e})") from e
    return sd, arch, meta
