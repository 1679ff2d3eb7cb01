"""Shared command-line arguments for commands that load a frozen encoder."""

from __future__ import annotations

import argparse
import logging

import torch.nn as nn

logger = logging.getLogger("openjepa.cli")

RANDOM_PREFIX = "random:"
DEFAULT_PATCH_SIZE = 16
DEFAULT_IMG_SIZE = 224


def add_encoder_arguments(p: argparse.ArgumentParser) -> None:
    """--checkpoint/--which/--num-heads/--patch-size/--img-size/--depth/--device/--batch-size."""
    p.add_argument("--checkpoint", required=True,
                   help="openjepa checkpoint, reference .pth.tar, safetensors, HF folder, timm state dict, "
                        "random:<model_name> for a random-init baseline, or 'pixels' for the raw-pixel "
                        "baseline (flattened pixels -> PCA-100 fitted on 5,000 train images -> standardised)")
    p.add_argument("--which", choices=["target", "context"], default="target",
                   help="which encoder of a training checkpoint: the EMA target (what the paper evaluates, "
                        "default) or the context encoder")
    p.add_argument("--num-heads", type=int, help="attention heads, when the weights alone do not say")
    p.add_argument("--patch-size", type=int,
                   help=f"patch size for random:<model_name> (default {DEFAULT_PATCH_SIZE})")
    p.add_argument("--img-size", type=int,
                   help=f"image size: for random:<model_name> its size (default {DEFAULT_IMG_SIZE}); for a "
                        f"checkpoint the evaluation resolution (default: the size it was trained at); for "
                        f"'pixels' the resize of image folders (arrays keep their stored resolution)")
    p.add_argument("--depth", type=int, help="encoder depth for random:<model_name> (default: the preset's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass")


def load_encoder_from_args(args: argparse.Namespace) -> nn.Module:
    """The frozen encoder named on the command line, in eval mode."""
    from ..distributed import resolve_device
    from ..interop import load_encoder

    device = resolve_device(args.device)
    if args.checkpoint.startswith(RANDOM_PREFIX):
        patch = args.patch_size or DEFAULT_PATCH_SIZE
        size = args.img_size or DEFAULT_IMG_SIZE
        kwargs = {"patch_size": patch, "img_size": size}
        if args.depth:
            kwargs["depth"] = args.depth
        return load_encoder(args.checkpoint, which=args.which, num_heads=args.num_heads, device=device, **kwargs)
    # A checkpoint knows its own architecture; --img-size then only sets the evaluation resolution
    # (the encoder resizes its sin-cos positions), passed to the runner by the commands.
    return load_encoder(args.checkpoint, which=args.which, num_heads=args.num_heads, device=device)


def load_source_from_args(args: argparse.Namespace) -> nn.Module | str:
    """The encoder module, or the string "pixels" for the raw-pixel pseudo-encoder."""
    from ..evaluate.runner import PIXELS

    if args.checkpoint == PIXELS:
        return PIXELS
    return load_encoder_from_args(args)


def encoder_label(args: argparse.Namespace, source: nn.Module | str) -> str:
    """What the JSON's `encoder` field says: random / pixels / target / context (as loaded)."""
    if isinstance(source, str):
        return source
    if args.checkpoint.startswith(RANDOM_PREFIX):
        return "random"
    which = getattr(source, "meta", {}).get("which")
    return str(which) if which else args.which
