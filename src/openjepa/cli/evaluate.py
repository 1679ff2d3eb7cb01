"""`openjepa eval {linear,knn,lowshot,attentive,regression} --checkpoint CKPT --data DATASET --out results.json`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._encoder import add_encoder_arguments, encoder_label, load_source_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `openjepa eval`."""
    from ..evaluate.runner import PIXEL_FIT_ON, PIXEL_PCA_DIM, TASKS

    # Checked in run(), not by argparse choices, so an unknown task is a one-line error (exit 2).
    p.add_argument("task", metavar="TASK", help=f"evaluation protocol: one of {', '.join(TASKS)}")
    add_encoder_arguments(p)
    p.add_argument("--data", required=True, help="image folder with train/ and val/, a .npz, or shapes:N")
    p.add_argument("--out", help="write the result JSON here")
    p.add_argument("--pooling", choices=["avg", "avg_last4", "patch"],
                   help="avg: mean of last-layer tokens (paper); avg_last4: last 4 layers; patch: tokens "
                        "(default: patch for attentive, avg otherwise)")
    p.add_argument("--label-key", help="another label array of a .npz (e.g. dist for Clevr/Dist; regression "
                                       "defaults to n_objects where the file has it)")
    p.add_argument("--cache", help="folder caching features by fingerprint (repeated evals skip extraction)")
    p.add_argument("--max-train", type=int, help="use only the first N training images")
    p.add_argument("--max-test", type=int, help="use only the first N test images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pca-dim", type=int, default=PIXEL_PCA_DIM, help="--checkpoint pixels: PCA dimensions")
    p.add_argument("--pca-fit-on", type=int, default=PIXEL_FIT_ON,
                   help="--checkpoint pixels: fit the PCA on this many leading train images")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Evaluate, print a markdown summary, write the JSON."""
    import torch

    from ..distributed import resolve_device
    from ..evaluate.runner import TASKS, evaluate_encoder, markdown_summary

    if args.task not in TASKS:
        raise ValueError(f"unknown task {args.task!r}; choose one of {', '.join(TASKS)}")
    for name in ("max_train", "max_test", "batch_size", "pca_dim", "pca_fit_on"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    source = load_source_from_args(args)
    if isinstance(source, torch.nn.Module):
        device = next(source.parameters()).device
    else:
        device = resolve_device(args.device)
    result = evaluate_encoder(source, args.data, args.task, pooling=args.pooling, label_key=args.label_key,
                              img_size=args.img_size, device=device, batch_size=args.batch_size,
                              cache_dir=args.cache, max_train=args.max_train, max_test=args.max_test,
                              seed=args.seed, progress=not args.no_progress, pca_dim=args.pca_dim,
                              fit_on=args.pca_fit_on)
    result = {"checkpoint": args.checkpoint, "encoder": encoder_label(args, source), **result}
    print(markdown_summary([result]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1, default=float))
    return 0
