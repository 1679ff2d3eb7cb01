"""Models: the I-JEPA ViT encoder, the predictor, and presets named as in the reference."""

from .ijepa import IJEPA, ijepa_loss, patchify
from .pos_embed import resize_pos_embed, sincos_2d
from .registry import (
    ENCODER_SPECS,
    VIT_EMBED_DIMS,
    EncoderSpec,
    create_encoder,
    create_predictor,
    list_models,
    vit_base,
    vit_giant,
    vit_huge,
    vit_large,
    vit_predictor,
    vit_small,
    vit_tiny,
)
from .vision_transformer import VisionTransformer, VisionTransformerPredictor, set_fused_attn

__all__ = [
    "IJEPA",
    "ijepa_loss",
    "patchify",
    "VisionTransformer",
    "VisionTransformerPredictor",
    "set_fused_attn",
    "create_encoder",
    "create_predictor",
    "list_models",
    "ENCODER_SPECS",
    "VIT_EMBED_DIMS",
    "EncoderSpec",
    "vit_tiny",
    "vit_small",
    "vit_base",
    "vit_large",
    "vit_huge",
    "vit_giant",
    "vit_predictor",
    "sincos_2d",
    "resize_pos_embed",
]
