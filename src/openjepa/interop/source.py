"""Encoder sources: the one grammar for `--checkpoint` strings, and the one resolver to a frozen encoder.

random:<model>   a random init of a preset (prefix case-insensitive): the usual baseline
pixels           the raw-pixel pseudo-encoder (any case), which only evaluation accepts
PATH             anything `load_encoder` reads (run checkpoint or folder, reference .pth.tar,
                 safetensors, HF folder, timm state dict), passed on untouched
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .api import RANDOM_PREFIX, Encoder, load_encoder

__all__ = [
    "PIXELS",
    "RANDOM_IMG_SIZE",
    "RANDOM_PATCH_SIZE",
    "RANDOM_PREFIX",
    "EncoderSource",
    "parse_encoder_source",
    "resolve_encoder",
]

PIXELS = "pixels"
RANDOM_PATCH_SIZE = 16  # architecture of random:<model> when none is asked for
RANDOM_IMG_SIZE = 224


@dataclass(frozen=True)
class EncoderSource:
    """Where a frozen encoder comes from. kind: "random" (model: the preset), "pixels" or "path"
    (path: the file or folder, as written); text: the source as given (what result files record)."""

    kind: str
    text: str
    model: str | None = None
    path: str | None = None

    def __str__(self) -> str:
        """The source as it was written."""
        return self.text

    @property
    def is_pixels(self) -> bool:
        """True for the raw-pixel pseudo-encoder."""
        return self.kind == "pixels"

    @property
    def run_folder(self) -> Path | None:
        """The run folder of a checkpoint path: the folder itself, or the folder holding the file."""
        if self.kind != "path" or self.path is None:
            return None
        p = Path(self.path)
        if p.is_dir():
            return p
        return p.parent if p.exists() else None


def parse_encoder_source(text: str | os.PathLike | EncoderSource) -> EncoderSource:
    """Parse an encoder source (see the module docstring); `text` itself when already parsed."""
    if isinstance(text, EncoderSource):
        return text
    raw = os.fspath(text)
    plain = raw.strip()
    if plain.lower() == PIXELS:
        return EncoderSource("pixels", raw)
    if plain[: len(RANDOM_PREFIX)].lower() == RANDOM_PREFIX:
        model = plain[len(RANDOM_PREFIX) :].strip()
        if not model:
            raise ValueError(f"bad encoder source {raw!r}: random: needs a model name, e.g. random:vit_tiny")
        return EncoderSource("random", raw, model=model)
    if not plain:
        raise ValueError(
            "no encoder source given: expected a checkpoint path or run folder, random:<model_name> or pixels"
        )
    return EncoderSource("path", raw, path=raw)


def resolve_encoder(
    source: str | os.PathLike | EncoderSource | Mapping[str, Any],
    *,
    which: str = "target",
    num_heads: int | None = None,
    device: str | torch.device = "cpu",
    random_arch: Mapping[str, int | None] | None = None,
    **load_kw: Any,
) -> Encoder:
    """The frozen encoder (eval mode) a source names; an already loaded checkpoint dict is read as is.

    random_arch: `patch_size` / `img_size` / `depth` of a random init (missing or None: 16 / 224 /
    the preset's depth); not used for files, which record their own architecture. load_kw: more
    `load_encoder` keywords, for every kind. "pixels" is refused: it is not a network.
    """
    if isinstance(source, Mapping):
        return load_encoder(source, which=which, num_heads=num_heads, device=device, **load_kw)
    src = parse_encoder_source(source)
    if src.is_pixels:
        raise ValueError(
            f"{src.text!r} is the raw-pixel baseline, not an encoder: only `openjepa eval` and "
            f"`openjepa extract` accept it; give a checkpoint or random:<model_name>"
        )
    if src.kind == "path":
        return load_encoder(src.path or src.text, which=which, num_heads=num_heads, device=device, **load_kw)
    asked = {k: v for k, v in (random_arch or {}).items() if v is not None}
    arch: dict[str, Any] = {"patch_size": RANDOM_PATCH_SIZE, "img_size": RANDOM_IMG_SIZE, **asked, **load_kw}
    return load_encoder(f"{RANDOM_PREFIX}{src.model}", which=which, num_heads=num_heads, device=device, **arch)
