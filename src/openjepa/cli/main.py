"""`openjepa` command line: thin wrappers over the library; known errors become one-line messages."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# command -> module in openjepa.cli exposing add_arguments(parser) and run(args) -> int
COMMANDS = {
    "pretrain": ("pretrain", "pretrain I-JEPA from a YAML recipe (ours or the reference's schema)"),
    "demo": ("demo", "offline demo: pretrain a small ViT, compare it with a random one"),
    "eval": ("evaluate", "evaluate a frozen encoder: linear, knn, lowshot, attentive, regression"),
    "extract": ("extract", "write frozen-encoder features and labels to .npz"),
    "convert": ("convert", "convert checkpoints between openjepa, reference, HF, timm, safetensors"),
    "info": ("info", "show presets, or what a checkpoint holds"),
    "index": ("index", "embed a folder of images into a similarity index (updated incrementally)"),
    "similar": ("similar", "nearest images of a query image or folder in an index, with a grid"),
    "report": ("report", "one self-contained HTML report of what a checkpoint learned"),
    "data": ("data", "datasets by name (cifar10, stl10, imagenette, ...): list them, or download them ahead of time"),
    "viz": ("viz", "figures: `viz predict` decodes the predictor's outputs behind the mask (paper Fig. 6)"),
}


def _known_errors() -> tuple[type[BaseException], ...]:
    from ..config import ConfigError
    from ..core.checkpoint import CheckpointError
    from ..masks import MaskSamplingError, MaskSettingsError
    from ..train.loop import NonFiniteLossError, RunExistsError

    return (
        ConfigError,
        MaskSettingsError,
        MaskSamplingError,
        CheckpointError,
        NonFiniteLossError,
        RunExistsError,
        FileNotFoundError,
        NotADirectoryError,
        PermissionError,
        OSError,
        ValueError,
    )


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per command."""
    parser = argparse.ArgumentParser(prog="openjepa", description="I-JEPA pretraining, evaluation and interop.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument(
        "--keep-denormals",
        action="store_true",
        help="keep subnormal floats on CPU (by default they are flushed to zero: up to 1.47x faster steps)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod = importlib.import_module(f"openjepa.cli.{module}")
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `openjepa` console script."""
    args = build_parser().parse_args(argv)
    if not args.keep_denormals:
        from ..core.precision import flush_denormals

        flush_denormals()  # before any parallel torch op, so the OpenMP worker threads inherit it
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint written is intact (resume with --resume)", file=sys.stderr)
        return 130
    except _known_errors() as e:
        if args.debug:
            raise
        print(f"openjepa {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
