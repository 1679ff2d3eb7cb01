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
        help="override the demo recipe, e.g. --set data.dataset=objects:8000",
    )
    p.add_argument(
        "--probe-data",
        default=None,
        metavar="SPEC",
        help="labelled data the probes fit and score on (default: the pretraining data; a generated set "
        "larger than 4,000 train images is probed on a separate draw of 4,000)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-figures", action="store_true", help="skip the retrieval grids, decoded predictions and plots")


def run(args: argparse.Namespace) -> int:
    """Run the demo and print its table."""
    from ..demo import run_demo

    summary = run_demo(
        args.minutes,
        args.out,
        args.overrides,
        progress=not args.no_progress,
        figures=not args.no_figures,
        probe_data=args.probe_data,
    )
    print(
        f"\nI-JEPA demo: {summary['pretrain_steps']} steps ({summary['epochs']} epochs) on "
        f"{summary['pretrain_data']} in {summary['seconds'] / 60:.1f} min; accuracy of the frozen encoders "
        f"on {summary['probe_data']}'s held-out images:\n"
    )
    print(summary["table"])
    if summary["figures"]:
        print("\nwhere to look:")
        for fig in summary["figures"].values():
            agree = fig.get("neighbours_with_the_query_label")
            extra = (
                f" (over all test images, {agree:.0%} of neighbours share the query's label)"
                if agree is not None
                else ""
            )
            print(f"  {fig['path']}: {fig['shows']}{extra}")
    print(f"\nresults, checkpoints and the run log: {summary['folder']}")
    return 0
