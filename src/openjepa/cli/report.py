"""`openjepa report --checkpoint CKPT --data DATASET --out report.html`: one self-contained HTML report."""

from __future__ import annotations

import argparse

from ._encoder import DATA_HELP, add_encoder_arguments, load_encoder_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `openjepa report`."""
    add_encoder_arguments(p)
    p.add_argument(
        "--data", required=True, help=f"{DATA_HELP} (train = kNN bank and retrieval database, test = queries)"
    )
    p.add_argument("--out", required=True, help="HTML file to write")
    p.add_argument("--label-key", help="another label array of a .npz")
    p.add_argument("--max-train", type=int, default=5000, help="train images used at most (default 5000)")
    p.add_argument("--max-test", type=int, default=1000, help="test images used at most (default 1000)")
    p.add_argument("--images", type=int, default=8, help="images in the mask and PCA figures (default 8)")
    p.add_argument("--queries", type=int, default=5, help="retrieval queries (default 5)")
    p.add_argument("--k", type=int, default=8, help="neighbours per retrieval query (default 8)")
    p.add_argument("--knn-k", type=int, default=20, help="k of the kNN classifier (default 20)")
    p.add_argument("--run-folder", help="folder with metrics.csv / params-ijepa.yaml (default: the checkpoint's)")
    p.add_argument("--strict", action="store_true", help="fail if any section cannot be drawn")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Load the encoder, write the report, print where it is."""
    from ..data.build import fetch_data
    from ..report import write_report

    data = fetch_data(args.data)  # before the weights load: a bad spec or a missing download fails at once
    encoder = load_encoder_from_args(args)
    device = next(encoder.parameters()).device
    res = write_report(
        args.checkpoint,
        data.text,
        args.out,
        encoder=encoder,
        device=device,
        label_key=args.label_key,
        max_train=args.max_train,
        max_test=args.max_test,
        n_images=args.images,
        n_queries=args.queries,
        k=args.k,
        knn_k=args.knn_k,
        batch_size=args.batch_size,
        run_folder=args.run_folder,
        strict=args.strict,
        progress=not args.no_progress,
    )
    for section, why in res.errors.items():
        print(f"warning: section {section!r} could not be drawn: {why}")
    m = res.metrics
    print(
        f"wrote {res.path} ({res.path.stat().st_size / 1e6:.1f} MB, {res.images} figures) in {res.seconds:.1f} s: "
        f"kNN top-1 {m['knn_top1']:.3f}, target std {m['target_std']:.3f}, RankMe {m['rankme']:.1f}"
    )
    return 1 if res.errors and args.strict else 0
