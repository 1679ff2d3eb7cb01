"""Model presets with the reference's names (vit_tiny .. vit_giant, vit_predictor) and a small registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .vision_transformer import VisionTransformer, VisionTransformerPredictor


@dataclass(frozen=True)
class EncoderSpec:
    """Width, depth, heads and MLP ratio of one ViT size."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0


ENCODER_SPECS: dict[str, EncoderSpec] = {
    "vit_tiny": EncoderSpec(192, 12, 3),
    "vit_small": EncoderSpec(384, 12, 6),
    "vit_base": EncoderSpec(768, 12, 12),
    "vit_large": EncoderSpec(1024, 24, 16),
    "vit_huge": EncoderSpec(1280, 32, 16),
    "vit_giant": EncoderSpec(1408, 40, 16, 48 / 11),
}
VIT_EMBED_DIMS = {name: spec.embed_dim for name, spec in ENCODER_SPECS.items()}


def list_models() -> list[str]:
    """Names of the encoder presets."""
    return list(ENCODER_SPECS)


def create_encoder(
    model_name: str, patch_size: int = 16, img_size: int | Sequence[int] = 224, **kwargs: Any
) -> VisionTransformer:
    """Build a preset encoder; kwargs override constructor arguments (e.g. depth for tests)."""
    if model_name not in ENCODER_SPECS:
        raise ValueError(f"unknown model {model_name!r}; choose one of {', '.join(ENCODER_SPECS)}")
    spec = ENCODER_SPECS[model_name]
    args: dict[str, Any] = dict(
        embed_dim=spec.embed_dim, depth=spec.depth, num_heads=spec.num_heads, mlp_ratio=spec.mlp_ratio, qkv_bias=True
    )
    args.update(kwargs)
    return VisionTransformer(img_size=img_size, patch_size=patch_size, **args)


def create_predictor(
    encoder: VisionTransformer,
    predictor_embed_dim: int = 384,
    depth: int = 6,
    num_heads: int | None = None,
    **kwargs: Any,
) -> VisionTransformerPredictor:
    """Build the predictor for an encoder as the reference does (heads default to the encoder's)."""
    return VisionTransformerPredictor(
        num_patches=encoder.num_patches,
        grid_size=encoder.grid_size,
        embed_dim=encoder.embed_dim,
        predictor_embed_dim=predictor_embed_dim,
        depth=depth,
        num_heads=num_heads or encoder.num_heads,
        **kwargs,
    )


def _factory(name: str):
    def build(
        patch_size: int = 16, img_size: int | tuple[int, int] | list[int] = 224, **kwargs: Any
    ) -> VisionTransformer:
        return create_encoder(name, patch_size=patch_size, img_size=img_size, **kwargs)

    build.__name__ = name
    build.__doc__ = f"The reference's `{name}` encoder (any patch and image size)."
    return build


vit_tiny = _factory("vit_tiny")
vit_small = _factory("vit_small")
vit_base = _factory("vit_base")
vit_large = _factory("vit_large")
vit_huge = _factory("vit_huge")
vit_giant = _factory("vit_giant")


def vit_predictor(**kwargs: Any) -> VisionTransformerPredictor:
    """The reference's `vit_predictor` factory (same keyword arguments)."""
    return VisionTransformerPredictor(**kwargs)
