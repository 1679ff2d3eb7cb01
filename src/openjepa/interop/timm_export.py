"""timm `VisionTransformer` exports: the encoder as a state dict that timm loads with strict keys.

Our encoder is built from timm's `PatchEmbed` and `Block`, so its parameter names are timm's. A timm
ViT reproduces it exactly when it has no class token (`class_token=False`, so `pos_embed` is
(1, N, D) over patches only), average pooling (`global_pool="avg"`) and the final LayerNorm on
the tokens (`fc_norm=False`): timm's default for "avg" is `fc_norm=True`, which moves the norm after
pooling (`norm` becomes Identity), so `forward_features` would return un-normalised tokens. With
`fc_norm=False`, `forward_features(x)` equals our `encoder(x)` and `forward_head(.., pre_logits=True)`
(or `model(x)` with `num_classes=0`) equals our "avg" feature. timm's `pos_embed` is a learned
Parameter; it simply holds our sin-cos values. The exact `timm.create_model` call for an
architecture is `timm_create_args(arch)`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..core.checkpoint import CheckpointError, atomic_save
from ._util import encoder_arch, load_torch_file, logger, strip_module_prefix
from .reference import preset_for_arch

__all__ = [
    "TIMM_BASE_MODELS",
    "timm_create_args",
    "create_timm_model",
    "encoder_to_timm_state_dict",
    "timm_to_encoder_state_dict",
    "save_timm",
    "load_timm",
]

# timm architecture used as the starting point for each I-JEPA size (widths/depths/heads match;
# the `*_gap_*` ones already have class_token=False, global_pool="avg", fc_norm=False).
TIMM_BASE_MODELS = {
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
    "vit_large": "vit_large_patch16_224",
    "vit_huge": "vit_huge_patch14_gap_224",
    "vit_giant": "vit_giant_patch16_gap_224",
}
_TIMM_EXTRA = ("cls_token", "reg_token", "fc_norm.weight", "fc_norm.bias", "norm_pre.weight", "norm_pre.bias")


def timm_create_args(arch: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(model_name, kwargs) such that `timm.create_model(model_name, **kwargs)` is our encoder's twin.

    Width, depth, heads and MLP ratio are passed explicitly unless the base model already has them.
    """
    a = encoder_arch(arch)
    preset = preset_for_arch(a)
    name = TIMM_BASE_MODELS.get(preset or "", "vit_base_patch16_224")
    if preset == "vit_huge" and a["patch_size"] == 16 and a["img_size"] == [448, 448]:
        name = "vit_huge_patch16_gap_448"
    h, w = a["img_size"]
    kwargs: dict[str, Any] = {
        "pretrained": False,
        "num_classes": 0,
        "class_token": False,
        "global_pool": "avg",
        "fc_norm": False,
        "img_size": h if h == w else (h, w),
        "patch_size": a["patch_size"],
    }
    if preset is None:
        kwargs.update(embed_dim=a["embed_dim"], depth=a["depth"], num_heads=a["num_heads"], mlp_ratio=a["mlp_ratio"])
    return name, kwargs


def create_timm_model(arch: Mapping[str, Any], **overrides: Any):
    """Build (random init) the timm VisionTransformer that matches `arch`; needs timm."""
    import timm

    name, kwargs = timm_create_args(arch)
    kwargs.update(overrides)
    return timm.create_model(name, **kwargs)


def encoder_to_timm_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our encoder state dict -> timm's (the names are the same; `module.` is dropped)."""
    return dict(strip_module_prefix(state_dict))


def timm_to_encoder_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm ViT state dict (class-token free, norm before pooling) -> our encoder state dict."""
    sd = dict(strip_module_prefix(state_dict))
    for wrapper in ("state_dict", "model"):
        if isinstance(sd.get(wrapper), Mapping) and len(sd) == 1:
            sd = dict(strip_module_prefix(sd[wrapper]))
    bad = [k for k in _TIMM_EXTRA if k in sd]
    if "cls_token" in bad or "reg_token" in bad:
        raise CheckpointError(
            "this timm model has a class/register token; an I-JEPA encoder has only patch "
            "tokens (create it with class_token=False)"
        )
    if bad:
        raise CheckpointError(
            f"this timm model has {', '.join(bad)}: its final norm is applied after pooling "
            f"(fc_norm) or before the blocks (pre_norm), which an I-JEPA encoder does not do; "
            f"export it with fc_norm=False, pre_norm=False"
        )
    head = [k for k in sd if k.startswith("head.")]
    if head:
        logger.warning("dropping the classifier head (%s) of the timm model", ", ".join(head))
        for k in head:
            del sd[k]
    return sd


def save_timm(
    state_dict: Mapping[str, torch.Tensor],
    arch: Mapping[str, Any],
    path: str | Path,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a timm state dict: `.safetensors` (arch and create_model call in its header) or torch.save."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous() for k, v in encoder_to_timm_state_dict(state_dict).items()}
    name, kwargs = timm_create_args(arch)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        meta = {
            "format": "pt",
            "timm_model": name,
            "timm_kwargs": json.dumps(kwargs),
            **{str(k): str(v) for k, v in (metadata or {}).items()},
        }
        save_file(sd, str(path), metadata=meta)
    else:
        atomic_save(sd, path)
    return path


def load_timm(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a timm state-dict file (.safetensors or a torch file): (our encoder state dict, metadata)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            sd = {k: f.get_tensor(k) for k in f.keys()}
            meta = dict(f.metadata() or {})
    else:
        sd, meta = load_torch_file(path), {}
        if not isinstance(sd, Mapping):
            raise CheckpointError(f"{path} does not hold a state dict (got {type(sd).__name__})")
    return timm_to_encoder_state_dict(sd), meta
