"""Which checkpoint format a path or a loaded dict is in (see formats.FORMATS), without unpickling code."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.checkpoint import FORMAT, CheckpointError
from ._util import is_state_dict, load_torch_file
from .hf import is_hf_folder
from .safetensors_io import SAFETENSORS_FORMAT, read_safetensors_metadata

__all__ = ["detect_dict", "detect_format", "detect_path", "looks_hf"]


def looks_hf(keys) -> bool:
    return any(k.startswith(("embeddings.patch_embeddings", "ijepa.embeddings")) for k in keys)


def detect_dict(obj: Any) -> str:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected a checkpoint dict, got {type(obj).__name__}")
    if obj.get("format") == FORMAT:
        return "openjepa"
    if any(isinstance(obj.get(k), Mapping) for k in ("encoder", "target_encoder")):
        return "reference"
    if is_state_dict(obj):
        return "hf" if looks_hf(obj) else "timm"
    for wrapper in ("state_dict", "model"):
        if is_state_dict(obj.get(wrapper)):
            return "timm"
    raise CheckpointError(
        f"unrecognised checkpoint dict (keys: {', '.join(map(str, list(obj)[:8]))}); "
        f"expected an openjepa run checkpoint, a reference checkpoint or an encoder state dict"
    )


def detect_format(src: str | Path | Mapping[str, Any]) -> str:
    """Guess the format of a path or loaded dict (see FORMATS). Never unpickles arbitrary objects."""
    if isinstance(src, Mapping):
        return detect_dict(src)
    fmt = detect_path(Path(src))
    return fmt if fmt is not None else detect_dict(load_torch_file(src))


def detect_path(p: Path) -> str | None:
    """Format of a folder or safetensors file; None for a torch file (its contents decide)."""
    if p.is_dir():
        if is_hf_folder(p):
            return "hf"
        if any(p.glob("ckpt-step*.pt")):
            return "openjepa"
        raise CheckpointError(
            f"{p} is neither a Hugging Face I-JEPA folder (config.json with model_type "
            f"'ijepa') nor an openjepa run folder (ckpt-step*.pt)"
        )
    if not p.exists():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    if p.suffix == ".safetensors":
        meta = read_safetensors_metadata(p)
        if meta.get("openjepa_format") == SAFETENSORS_FORMAT:
            return "safetensors"
        if meta.get("openjepa_layout") in ("hf", "timm"):
            return meta["openjepa_layout"]
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as f:
            return "hf" if looks_hf(f.keys()) else "timm"
    return None
