"""`openjepa viz predict --checkpoint CKPT --data DATASET --out grid.png`: decode what the predictor predicts."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `openjepa viz` (one sub-command per figure)."""
    sub = p.add_subparsers(dest="figure", required=True, metavar="FIGURE")
    pr = sub.add_parser(
        "predict",
        help="the paper's Figure 6: predictor outputs at masked blocks, decoded to pixels",
        description="Train a per-patch MLP decoder from frozen target-encoder features to pixels "
        "(on the train split), then decode the predictor's outputs at the masked "
        "target blocks of test images. Columns: image, context, decoded prediction, "
        "decoded true target features (the decoder's ceiling).",
    )
    pr.add_argument("--checkpoint", required=True, help="openjepa training checkpoint (ckpt-step*.pt) or run folder")
    pr.add_argument("--data", required=True, help="dataset spec: .npz, image folder with train/ and val/, shapes:N")
    pr.add_argument("--out", required=True, help="PNG file to write")
    pr.add_argument("--images", type=int, default=8, help="test images shown (default 8)")
    pr.add_argument("--decoder-images", type=int, default=2000, help="train images the decoder learns from")
    pr.add_argument("--decoder-steps", type=int, default=1500, help="decoder optimisation steps (default 1500)")
    pr.add_argument("--seed", type=int, default=0, help="seed of the masks and the decoder")
    pr.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    pr.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Draw the requested figure and print where it is."""
    from ..core.distributed import resolve_device
    from ..viz.predict import predict_grid

    if args.images < 1 or args.decoder_images < 1 or args.decoder_steps < 1:
        raise ValueError("--images, --decoder-images and --decoder-steps must be at least 1")
    res = predict_grid(
        args.checkpoint,
        args.data,
        args.out,
        n_images=args.images,
        decoder_images=args.decoder_images,
        decoder_steps=args.decoder_steps,
        device=resolve_device(args.device),
        seed=args.seed,
        progress=not args.no_progress,
    )
    m = res.metrics
    print(
        f"wrote {res.path} in {res.seconds:.1f} s: decoder held-out MSE {m['decoder_val_mse']:.3f} "
        f"(pixel variance {m['pixel_var']:.3f}), prediction/target cosine {m['pred_target_cosine']:.3f}"
    )
    return 0
