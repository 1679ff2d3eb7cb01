"""`convert`: any supported checkpoint format to any other, and the `openjepa convert` CLI hooks.

    openjepa convert --from reference --to hf IN1K-vit.h.14-300e.pth.tar ijepa-vith14-hf/

Formats: openjepa, reference, hf, timm, safetensors (see `formats.py`). openjepa <-> reference keep
all three networks, the optimizer state and the epoch. Conversions to hf / timm / safetensors
write one encoder: the target (EMA) encoder unless `which="context"`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..core.checkpoint import CheckpointError
from ._util import WHICH, logger
from .formats import FORMATS, read_weights, write_weights

__all__ = ["convert", "add_convert_args", "run_convert", "FORMATS"]


def convert(
    src: str | Path | dict,
    dst: str | Path,
    from_format: str | None,
    to_format: str,
    which: str = "target",
    num_heads: int | None = None,
    *,
    predictor_heads: int | None = None,
    encoder_only: bool = False,
) -> Path:
    """Convert `src` (format `from_format`, or None / "auto" to detect it) to `to_format` at `dst`.

    which: the encoder written to one-encoder formats (hf, timm, safetensors): "target" (default,
      the EMA encoder the paper evaluates) or "context".
    num_heads: needed when the source does not record the number of heads (reference, timm .pth)
      and its width matches no preset. predictor_heads: the predictor's, if not the encoder's.
    encoder_only: allow openjepa / reference output from a source without a predictor (hf, timm,
      safetensors): the file gets the encoder in both encoder slots and no predictor, which serves
      evaluation but cannot resume training. Without it such conversions raise, saying so.
    Returns the path written.
    """
    if to_format not in FORMATS:
        raise ValueError(f"unknown target format {to_format!r}; choose one of {', '.join(FORMATS)}")
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    w = read_weights(src, from_format=from_format, num_heads=num_heads, predictor_heads=predictor_heads)
    out = write_weights(w, dst, to_format, which=which, encoder_only=encoder_only)
    kept = (
        "encoder, predictor, target_encoder"
        if to_format in ("openjepa", "reference") and w.is_full
        else f"{which if not w.is_single else (w.stored_which or 'single')} encoder"
    )
    logger.info("converted %s [%s] -> %s [%s] (%s)", w.source, w.format, out, to_format, kept)
    return out


def add_convert_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add `openjepa convert`'s arguments: --from, --to, --which, --num-heads, ..., IN, OUT."""
    parser.add_argument("src", metavar="IN", help="checkpoint file, run folder or Hugging Face folder")
    parser.add_argument("dst", metavar="OUT", help="output file (a folder for --to hf)")
    parser.add_argument(
        "--from", dest="from_format", choices=("auto", *FORMATS), default="auto", help="source format (default: detect)"
    )
    parser.add_argument("--to", dest="to_format", choices=FORMATS, required=True, help="target format")
    parser.add_argument(
        "--which",
        choices=WHICH,
        default="target",
        help="encoder written to hf/timm/safetensors: target (EMA, what the paper evaluates; default) or context",
    )
    parser.add_argument(
        "--num-heads",
        type=int,
        default=None,
        help="encoder attention heads, when the source does not record them and its width matches no preset",
    )
    parser.add_argument(
        "--predictor-heads",
        type=int,
        default=None,
        help="predictor attention heads (default: the encoder's, as the reference)",
    )
    parser.add_argument(
        "--encoder-only",
        action="store_true",
        help="allow openjepa/reference output from a source without a predictor (evaluation-only file)",
    )
    return parser


def run_convert(args: Any) -> int:
    """Run `convert` from parsed arguments; prints the output path; returns the exit code."""
    try:
        out = convert(
            args.src,
            args.dst,
            args.from_format,
            args.to_format,
            which=args.which,
            num_heads=args.num_heads,
            predictor_heads=getattr(args, "predictor_heads", None),
            encoder_only=getattr(args, "encoder_only", False),
        )
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"openjepa convert: error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - thin manual entry point
    parser = add_convert_args(argparse.ArgumentParser(prog="openjepa convert", description=__doc__))
    return run_convert(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
