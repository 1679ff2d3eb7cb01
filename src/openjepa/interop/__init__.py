"""Interoperability: load encoders from any checkpoint, convert between formats.

    from openjepa.interop import load_encoder, convert
    enc = load_encoder("IN1K-vit.h.14-300e.pth.tar")        # target (EMA) encoder, eval mode
    feats = enc.embed("images/")                             # (N, 1280) float32
    convert("run/ckpt-step00001000.pt", "hf-folder", "openjepa", "hf")

Formats: openjepa (run checkpoints), reference (facebookresearch/ijepa .pth.tar), hf (transformers
IJepaModel folder), timm (ViT state dict), safetensors (encoder-only export). See docs/interop.md.
"""

from ._util import add_module_prefix, check_fits, strip_module_prefix
from .api import POOLINGS, Encoder, list_images, load_encoder, make_preprocess
from .convert import add_convert_args, convert, run_convert
from .formats import FORMATS, Weights, detect_format, read_weights, write_weights
from .hf import (
    arch_from_hf_config,
    encoder_to_hf_state_dict,
    hf_config,
    hf_preprocessor_config,
    hf_to_encoder_state_dict,
    load_hf,
    save_hf,
)
from .reference import (
    from_reference_checkpoint,
    infer_arch,
    infer_encoder_arch,
    infer_predictor_arch,
    load_reference_checkpoint,
    to_reference_checkpoint,
)
from .safetensors_io import load_encoder_safetensors, save_encoder_safetensors
from .timm_export import (
    create_timm_model,
    encoder_to_timm_state_dict,
    load_timm,
    save_timm,
    timm_create_args,
    timm_to_encoder_state_dict,
)

__all__ = [
    "load_encoder",
    "Encoder",
    "make_preprocess",
    "list_images",
    "POOLINGS",
    "convert",
    "add_convert_args",
    "run_convert",
    "FORMATS",
    "Weights",
    "detect_format",
    "read_weights",
    "write_weights",
    "load_reference_checkpoint",
    "infer_encoder_arch",
    "infer_predictor_arch",
    "infer_arch",
    "to_reference_checkpoint",
    "from_reference_checkpoint",
    "encoder_to_hf_state_dict",
    "hf_to_encoder_state_dict",
    "hf_config",
    "arch_from_hf_config",
    "hf_preprocessor_config",
    "save_hf",
    "load_hf",
    "timm_create_args",
    "create_timm_model",
    "encoder_to_timm_state_dict",
    "timm_to_encoder_state_dict",
    "save_timm",
    "load_timm",
    "save_encoder_safetensors",
    "load_encoder_safetensors",
    "strip_module_prefix",
    "add_module_prefix",
    "check_fits",
]
