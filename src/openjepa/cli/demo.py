"""`openjepa demo [--minutes M] [--out DIR]`: the offline end-to-end demo."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `openjepa demo`."""
    p.add_argument(
        "--minutes", type=float, default=9.0, help="wall-clock budget for the whole demo in minutes (default 9)"
    )
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override the demo recipe, e.g. --set data.dataset=shapes:4000",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run the demo and print its table."""
    from ..demo import run_demo

    summary = run_demo(args.minutes, args.out, args.overrides, progress=not args.no_progress)
    print(
        f"\nI-JEPA demo: {summary['pretrain_steps']} steps ({summary['epochs']} epochs) in "
        f"{summary['seconds'] / 60:.1f} min; held-out accuracy of the frozen encoders:\n"
    )
    print(summary["table"])
    print(f"\nresults, plots and checkpoints: {summary['folder']}")
    return 0
