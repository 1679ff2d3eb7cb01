"""Shared command-line arguments for commands that load a frozen encoder, and for `--data`."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

import torch.nn as nn

if TYPE_CHECKING:
    from ..interop.api import Encoder

logger = logging.getLogger("openjepa.cli")

DATA_HELP = (
    "dataset spec: image folder (DIR or folder:DIR, with train/ and val/ sub-folders or classes "
    "directly), x.npz or npz:PATH, shards:PATTERN (tar shards, or a folder of them), shapes:N or demo, "
    "a dataset by name: cifar10, cifar100, stl10, imagenette, mnist, fashion-mnist (downloaded on first "
    "use: openjepa data list), or imagenet:DIR (DIR/train/<wnid>/*.JPEG, DIR/val/<wnid>/*.JPEG)"
)


def add_encoder_arguments(p: argparse.ArgumentParser) -> None:
    """--checkpoint/--which/--num-heads/--patch-size/--img-size/--depth/--device/--batch-size."""
    from ..interop.source import RANDOM_IMG_SIZE, RANDOM_PATCH_SIZE

    p.add_argument(
        "--checkpoint",
        required=True,
        help="openjepa checkpoint, reference .pth.tar, safetensors, HF folder, timm state dict, "
        "random:<model_name> for a random-init baseline, or 'pixels' for the raw-pixel "
        "baseline (flattened pixels -> PCA-100 fitted on 5,000 train images -> standardised)",
    )
    p.add_argument(
        "--which",
        choices=["target", "context"],
        default="target",
        help="which encoder of a training checkpoint: the EMA target (what the paper evaluates, "
        "default) or the context encoder",
    )
    p.add_argument("--num-heads", type=int, help="attention heads, when the weights alone do not say")
    p.add_argument("--patch-size", type=int, help=f"patch size for random:<model_name> (default {RANDOM_PATCH_SIZE})")
    p.add_argument(
        "--img-size",
        type=int,
        help=f"image size: for random:<model_name> its size (default {RANDOM_IMG_SIZE}); for a "
        f"checkpoint the evaluation resolution (default: the size it was trained at); for "
        f"'pixels' the resize of image folders (arrays keep their stored resolution)",
    )
    p.add_argument("--depth", type=int, help="encoder depth for random:<model_name> (default: the preset's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass")


def add_feature_arguments(p: argparse.ArgumentParser) -> None:
    """The feature-extraction arguments `eval` and `extract` share: cache, subsets, the pixel baseline."""
    from ..evaluate.runner import PIXEL_FIT_ON, PIXEL_PCA_DIM

    p.add_argument("--cache", help="folder caching features by fingerprint (repeated runs skip extraction)")
    p.add_argument("--max-train", type=int, help="use only the first N training images")
    p.add_argument("--max-test", type=int, help="use only the first N test images")
    p.add_argument("--pca-dim", type=int, default=PIXEL_PCA_DIM, help="--checkpoint pixels: PCA dimensions")
    p.add_argument(
        "--pca-fit-on",
        type=int,
        default=PIXEL_FIT_ON,
        help="--checkpoint pixels: fit the PCA on this many leading train images",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def load_encoder_from_args(args: argparse.Namespace) -> Encoder:
    """The frozen encoder named on the command line, in eval mode ('pixels' is refused)."""
    from ..core.distributed import resolve_device
    from ..interop.source import resolve_encoder

    # A checkpoint knows its own architecture; --img-size then only sets the evaluation resolution
    # (the encoder resizes its sin-cos positions), passed to the runner by the commands.
    arch = {"patch_size": args.patch_size, "img_size": args.img_size, "depth": args.depth}
    return resolve_encoder(
        args.checkpoint,
        which=args.which,
        num_heads=args.num_heads,
        device=resolve_device(args.device),
        random_arch=arch,
    )


def load_source_from_args(args: argparse.Namespace) -> Encoder | str:
    """The encoder module, or the string "pixels" for the raw-pixel pseudo-encoder."""
    from ..interop.source import PIXELS, parse_encoder_source

    if parse_encoder_source(args.checkpoint).is_pixels:
        return PIXELS
    return load_encoder_from_args(args)


def encoder_label(args: argparse.Namespace, source: nn.Module | str) -> str:
    """What the JSON's `encoder` field says: random / pixels / target / context (as loaded)."""
    from ..interop.source import parse_encoder_source

    kind = parse_encoder_source(args.checkpoint).kind
    if kind in ("random", "pixels"):
        return kind
    which = getattr(source, "meta", {}).get("which")
    return str(which) if which else args.which
