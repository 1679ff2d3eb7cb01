"""`openjepa eval {linear,knn,lowshot,attentive} --checkpoint CKPT --data DATASET --out results.json`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._encoder import add_encoder_arguments, load_encoder_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `openjepa eval`."""
    from ..evaluate.runner import TASKS

    p.add_argument("task", choices=TASKS, help="evaluation protocol")
    add_encoder_arguments(p)
    p.add_argument("--data", required=True, help="image folder with train/ and val/, a .npz, or shapes:N")
    p.add_argument("--out", help="write the result JSON here")
    p.add_argument("--pooling", choices=["avg", "avg_last4", "patch"],
                   help="avg: mean of last-layer tokens (paper); avg_last4: last 4 layers; patch: tokens")
    p.add_argument("--label-key", help="another label array of a .npz (e.g. dist for Clevr/Dist)")
    p.add_argument("--cache", help="folder caching features by fingerprint (repeated evals skip extraction)")
    p.add_argument("--max-train", type=int, help="use only the first N training images")
    p.add_argument("--max-test", type=int, help="use only the first N test images")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    """Evaluate, print a markdown summary, write the JSON."""
    from ..evaluate.runner import evaluate_encoder, markdown_summary

    encoder = load_encoder_from_args(args)
    result = evaluate_encoder(encoder, args.data, args.task, pooling=args.pooling, label_key=args.label_key,
                              device=next(encoder.parameters()).device, batch_size=args.batch_size,
                              cache_dir=args.cache, max_train=args.max_train, max_test=args.max_test,
                              seed=args.seed)
    result = {"checkpoint": args.checkpoint, "encoder": "random" if args.checkpoint.startswith("random:")
              else args.which, **result}
    print(markdown_summary([result]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1, default=float))
    return 0
