"""`openjepa index --checkpoint CKPT --images FOLDER --out INDEX`: build or update an image similarity index."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from ._encoder import add_encoder_arguments, load_encoder_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `openjepa index`."""
    add_encoder_arguments(p)
    p.add_argument(
        "--images",
        required=True,
        nargs="+",
        metavar="FOLDER",
        help="image folder(s) (DIR or folder:DIR, searched recursively) or image files; "
        "specs without image files (.npz, shards, shapes) are refused",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="INDEX",
        help="index file to write; if it exists it is updated: only new or changed images are embedded",
    )
    p.add_argument(
        "--pooling",
        choices=["avg", "avg_last4"],
        help="feature per image: mean of the last layer's patch tokens (avg, the default for a new "
        "index) or of the last 4 layers (avg_last4); an update keeps the index's",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=min(4, max(0, (os.cpu_count() or 1) - 1)),
        help="image-decoding worker processes (default: cores - 1, at most 4)",
    )
    p.add_argument(
        "--keep-missing",
        action="store_true",
        help="on update, keep entries whose file has disappeared from the folder (default: drop them)",
    )
    p.add_argument("--half", action="store_true", help="store features as float16 (half the size)")
    p.add_argument(
        "--ext",
        action="append",
        default=[],
        metavar="SUFFIX",
        help="also index files with this suffix (repeatable), e.g. --ext .raw",
    )
    p.add_argument(
        "--save-every",
        type=int,
        default=20000,
        metavar="N",
        help="save the index every N embedded images, so an interrupted run resumes (default 20000)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Build the index, or bring an existing one up to date, and save it."""
    import torch

    from ..data.images import image_extensions
    from ..data.spec import image_inputs
    from ..search import Index

    t0 = time.perf_counter()
    out = Path(args.out)
    images = image_inputs(args.images)  # dataset specs resolve to their image folders
    previous = Index.load(out) if out.exists() else None  # fail early on a bad file, before loading weights
    encoder = load_encoder_from_args(args)
    exts = image_extensions(args.ext)
    # Saved every --save-every images: an interrupted run, started again, embeds only what is left.
    kw = dict(
        batch_size=args.batch_size,
        num_workers=args.workers,
        extensions=exts,
        progress=not args.no_progress,
        save_to=out,
        save_every=args.save_every,
    )
    if previous is None:
        index = Index.build(
            encoder, images, pooling=args.pooling or "avg", dtype=torch.float16 if args.half else torch.float32, **kw
        )
        verb = "built"
    else:
        index = previous
        index.check_encoder(encoder, pooling=args.pooling)  # refuses a different checkpoint with a clear message
        index.add(encoder, images, prune=not args.keep_missing, **kw)
        verb = "updated"
    report = index.last_report
    for path, why in report.skipped[:20]:
        print(f"skipped unreadable image: {path} ({why})")
    if len(report.skipped) > 20:
        print(f"... and {len(report.skipped) - 20} more unreadable images")
    print(
        f"{verb} {out}: {len(index)} images, dim {index.dim}, {index.pooling} pooling, encoder fingerprint "
        f"{index.fingerprint}\n  {report.summary()}; total {time.perf_counter() - t0:.1f} s"
    )
    return 0
