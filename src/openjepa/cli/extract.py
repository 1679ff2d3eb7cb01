"""`openjepa extract --checkpoint CKPT --data DATASET --out feats.npz`: frozen features and labels."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ._encoder import add_encoder_arguments, load_encoder_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `openjepa extract`."""
    add_encoder_arguments(p)
    p.add_argument("--data", required=True, help="image folder with train/ and val/, a .npz, or shapes:N")
    p.add_argument("--out", required=True, help="output .npz (train_features, train_labels, test_...)")
    p.add_argument("--pooling", choices=["avg", "avg_last4", "patch"], default="avg")
    p.add_argument("--label-key", help="another label array of a .npz")


def run(args: argparse.Namespace) -> int:
    """Extract both splits and save them."""
    from ..evaluate.runner import eval_datasets, features_for

    encoder = load_encoder_from_args(args)
    device = next(encoder.parameters()).device
    train, test = eval_datasets(args.data, int(encoder.img_size[0]), args.label_key)
    arrays = {}
    for split, ds in (("train", train), ("test", test)):
        feats, labels = features_for(encoder, ds, args.pooling, device=device, batch_size=args.batch_size)
        arrays[f"{split}_features"], arrays[f"{split}_labels"] = feats.float().numpy(), labels.numpy()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **arrays, pooling=np.array(args.pooling), checkpoint=np.array(args.checkpoint))
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))
    return 0
