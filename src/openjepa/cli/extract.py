"""`openjepa extract --checkpoint CKPT --data DATASET --out feats.npz`: frozen features and labels."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ._encoder import add_encoder_arguments, encoder_label, load_source_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `openjepa extract`."""
    from ..evaluate.runner import PIXEL_FIT_ON, PIXEL_PCA_DIM

    add_encoder_arguments(p)
    p.add_argument("--data", required=True, help="image folder with train/ and val/, a .npz, or shapes:N")
    p.add_argument("--out", required=True, help="output .npz (train_features, train_labels, test_...)")
    p.add_argument("--pooling", choices=["avg", "avg_last4", "patch"], default="avg")
    p.add_argument("--label-key", help="another label array of a .npz")
    p.add_argument("--cache", help="folder caching features by fingerprint")
    p.add_argument("--max-train", type=int, help="use only the first N training images")
    p.add_argument("--max-test", type=int, help="use only the first N test images")
    p.add_argument("--pca-dim", type=int, default=PIXEL_PCA_DIM, help="--checkpoint pixels: PCA dimensions")
    p.add_argument("--pca-fit-on", type=int, default=PIXEL_FIT_ON,
                   help="--checkpoint pixels: fit the PCA on this many leading train images")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Extract both splits and save them."""
    from ..evaluate.runner import data_key, eval_datasets, features_for, pixel_features

    for name in ("max_train", "max_test", "batch_size", "pca_dim", "pca_fit_on"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    source = load_source_from_args(args)
    if isinstance(source, str):  # raw-pixel baseline: PCA features, pooling does not apply
        splits = pixel_features(args.data, pca_dim=args.pca_dim, fit_on=args.pca_fit_on,
                                label_key=args.label_key, img_size=args.img_size, max_train=args.max_train,
                                max_test=args.max_test, cache_dir=args.cache)
        pooling = f"pca{splits[0][0].shape[1]}"
    else:
        device = next(source.parameters()).device
        img_size = args.img_size or int(source.img_size[0])
        train, test = eval_datasets(args.data, img_size, args.label_key, args.max_train, args.max_test)
        key = (*data_key(args.data), args.label_key or "", img_size)
        splits = tuple(features_for(source, ds, args.pooling, device=device, batch_size=args.batch_size,
                                    cache_dir=args.cache, key=key + (split,), progress=not args.no_progress)
                       for split, ds in (("train", train), ("test", test)))
        pooling = args.pooling
    arrays = {}
    for split, (feats, labels) in zip(("train", "test"), splits):
        arrays[f"{split}_features"], arrays[f"{split}_labels"] = feats.float().numpy(), labels.numpy()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **arrays, pooling=np.array(pooling), checkpoint=np.array(args.checkpoint),
             encoder=np.array(encoder_label(args, source)))
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))
    return 0
