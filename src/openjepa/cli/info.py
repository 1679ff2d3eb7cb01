"""`openjepa info [CHECKPOINT]`: the presets, or what a checkpoint holds."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `openjepa info`."""
    p.add_argument("checkpoint", nargs="?", help="an openjepa checkpoint (omit to list the presets)")


def run(args: argparse.Namespace) -> int:
    """Print presets or a checkpoint summary as JSON."""
    from ..models import ENCODER_SPECS

    if not args.checkpoint:
        for name, s in ENCODER_SPECS.items():
            print(
                f"{name:10s} width {s.embed_dim:5d}  depth {s.depth:3d}  heads {s.num_heads:3d}  mlp {s.mlp_ratio:.3g}"
            )
        return 0
    from ..core.checkpoint import load_checkpoint

    state = load_checkpoint(args.checkpoint)
    print(
        json.dumps(
            {
                "arch": state["arch"],
                "step": state["step"],
                "epoch": state["epoch"],
                "batch_in_epoch": state["batch_in_epoch"],
                "loss": state.get("loss"),
                "reason": state.get("reason"),
            },
            indent=1,
        )
    )
    return 0
