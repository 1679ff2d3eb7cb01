"""`openjepa eval {linear,knn,lowshot,attentive,regression} --checkpoint CKPT --data DATASET --out results.json`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._encoder import DATA_HELP, add_encoder_arguments, add_feature_arguments, encoder_label, load_source_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `openjepa eval`."""
    from ..evaluate.runner import TASKS
    from ..models.pooling import POOLINGS

    # Checked in run(), not by argparse choices, so an unknown task is a one-line error (exit 2).
    p.add_argument("task", metavar="TASK", help=f"evaluation protocol: one of {', '.join(TASKS)}")
    add_encoder_arguments(p)
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--out", help="write the result JSON here")
    p.add_argument(
        "--pooling",
        choices=POOLINGS,
        help="avg: mean of last-layer tokens (paper); avg_last4: last 4 layers; avg_all: every layer; "
        "grid_all: every layer's means over the image's 4 quadrants; patch: tokens (default: patch "
        "for attentive; avg, or avg_all for encoders of at most 6 blocks, otherwise)",
    )
    p.add_argument(
        "--label-key",
        help="another label array of a .npz (e.g. dist for Clevr/Dist; regression "
        "defaults to n_objects where the file has it)",
    )
    add_feature_arguments(p)
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    """Evaluate, print a markdown summary, write the JSON."""
    from dataclasses import replace

    import torch

    from ..core.distributed import resolve_device
    from ..data.build import fetch_data
    from ..evaluate.runner import TASKS, evaluate_encoder, markdown_summary

    if args.task not in TASKS:
        raise ValueError(f"unknown task {args.task!r}; choose one of {', '.join(TASKS)}")
    for name in ("max_train", "max_test", "batch_size", "pca_dim", "pca_fit_on"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    data = fetch_data(args.data)  # before the weights load: a bad spec or a missing download fails at once
    source = load_source_from_args(args)
    if isinstance(source, torch.nn.Module):
        device = next(source.parameters()).device
    else:
        device = resolve_device(args.device)
    result = evaluate_encoder(
        source,
        data,
        args.task,
        pooling=args.pooling,
        label_key=args.label_key,
        img_size=args.img_size,
        device=device,
        batch_size=args.batch_size,
        cache_dir=args.cache,
        max_train=args.max_train,
        max_test=args.max_test,
        seed=args.seed,
        progress=not args.no_progress,
        pca_dim=args.pca_dim,
        fit_on=args.pca_fit_on,
    )
    result = replace(result, checkpoint=args.checkpoint, encoder=encoder_label(args, source))
    print(markdown_summary([result]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result.to_dict(), indent=1, default=float))
    return 0
