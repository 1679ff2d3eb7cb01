"""`openjepa convert --from FMT --to FMT IN OUT`: a thin wrapper over openjepa.interop.convert."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `openjepa convert` (defined next to the conversion code)."""
    from ..interop.convert import add_convert_args

    add_convert_args(p)


def run(args: argparse.Namespace) -> int:
    """Convert and report."""
    from ..interop.convert import run_convert

    return int(run_convert(args) or 0)
