"""`openjepa extract --checkpoint CKPT --data DATASET --out feats.npz`: frozen features and labels."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ._encoder import DATA_HELP, add_encoder_arguments, add_feature_arguments, encoder_label, load_source_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `openjepa extract`."""
    from ..models.pooling import POOLINGS

    add_encoder_arguments(p)
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--out", required=True, help="output .npz (train_features, train_labels, test_...)")
    p.add_argument("--pooling", choices=POOLINGS, default="avg")
    p.add_argument("--label-key", help="another label array of a .npz")
    add_feature_arguments(p)


def run(args: argparse.Namespace) -> int:
    """Extract both splits and save them."""
    from ..data.build import fetch_data
    from ..evaluate.runner import Features, data_key, eval_datasets, features_for, pixel_features

    for name in ("max_train", "max_test", "batch_size", "pca_dim", "pca_fit_on"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    data = fetch_data(args.data)  # before the weights load: a bad spec or a missing download fails at once
    source = load_source_from_args(args)
    splits: tuple[Features, ...]  # (train, test)
    if isinstance(source, str):  # raw-pixel baseline: PCA features, pooling does not apply
        splits = pixel_features(
            data,
            pca_dim=args.pca_dim,
            fit_on=args.pca_fit_on,
            label_key=args.label_key,
            img_size=args.img_size,
            max_train=args.max_train,
            max_test=args.max_test,
            cache_dir=args.cache,
        )
        pooling = f"pca{splits[0][0].shape[1]}"
    else:
        device = next(source.parameters()).device
        img_size = args.img_size or int(source.img_size[0])
        train, test = eval_datasets(data, img_size, args.label_key, args.max_train, args.max_test)
        key = (*data_key(data), args.label_key or "", img_size)
        splits = tuple(
            features_for(
                source,
                ds,
                args.pooling,
                device=device,
                batch_size=args.batch_size,
                cache_dir=args.cache,
                key=key + (split,),
                progress=not args.no_progress,
            )
            for split, ds in (("train", train), ("test", test))
        )
        pooling = args.pooling
    arrays = {}
    for split, (feats, labels) in zip(("train", "test"), splits):
        arrays[f"{split}_features"], arrays[f"{split}_labels"] = feats.float().numpy(), labels.numpy()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        args.out,
        **arrays,  # type: ignore[arg-type]  # numpy's stub lets ** fill allow_pickle (a bool)
        pooling=np.array(pooling),
        checkpoint=np.array(args.checkpoint),
        encoder=np.array(encoder_label(args, source)),
    )
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))
    return 0
