"""Shared command-line arguments for commands that load a frozen encoder."""

from __future__ import annotations

import argparse

import torch.nn as nn


def add_encoder_arguments(p: argparse.ArgumentParser) -> None:
    """--checkpoint/--which/--num-heads/--patch-size/--img-size/--device."""
    p.add_argument("--checkpoint", required=True,
                   help="openjepa checkpoint, reference .pth.tar, safetensors, HF folder, timm state dict, "
                        "or random:<model_name> for a random-init baseline")
    p.add_argument("--which", choices=["target", "context"], default="target",
                   help="which encoder of a training checkpoint: the EMA target (what the paper evaluates, "
                        "default) or the context encoder")
    p.add_argument("--num-heads", type=int, help="attention heads, when the weights alone do not say")
    p.add_argument("--patch-size", type=int, default=16, help="patch size for random:<model_name>")
    p.add_argument("--img-size", type=int, default=224, help="image size for random:<model_name>")
    p.add_argument("--depth", type=int, help="encoder depth for random:<model_name> (default: the preset's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass")


def load_encoder_from_args(args: argparse.Namespace) -> nn.Module:
    """The frozen encoder named on the command line, in eval mode."""
    from ..distributed import resolve_device
    from ..interop import load_encoder

    kwargs = {}
    if args.checkpoint.startswith("random:"):
        kwargs = {"patch_size": args.patch_size, "img_size": args.img_size}
        if args.depth:
            kwargs["depth"] = args.depth
    return load_encoder(args.checkpoint, which=args.which, num_heads=args.num_heads,
                        device=resolve_device(args.device), **kwargs)
