"""The floor every pretraining result is compared against: random-init ViT and raw-pixel baselines.

Prints one JSON line with, on the test split of an .npz dataset:
  - a randomly initialised vit_tiny (full depth 12; seed 0, initialised as the reference does),
    linear-probe and kNN top-1 for pooling "avg" (mean of last-layer patch tokens, the paper's
    feature) and "avg_last4" (the last 4 layers' means concatenated);
  - raw pixels (flattened -> PCA-100 fitted on the first 5,000 train images -> standardised), with
    the same linear probe, plus scikit-learn LogisticRegression as ../shared/data/README.md did.
Everything goes through openjepa.evaluate.runner, i.e. exactly what `openjepa eval` runs. The patch
size defaults to image size / 8 (an 8x8 token grid): patch 4 at 32 px (CIFAR-10), patch 8 at 64 px
(Imagenette).

    python bench/baselines.py --data ../shared/data/cifar10_32px.npz
    python bench/baselines.py --data ../shared/data/imagenette2_64px.npz --max-train 10000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch

from openjepa.data.build import local_npz
from openjepa.evaluate.features import extract_features
from openjepa.evaluate.linear import logistic_regression_probe
from openjepa.evaluate.runner import data_key, eval_datasets, features_for, pixel_features, run_probe
from openjepa.interop import load_encoder


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help=".npz with x_train/y_train/x_test/y_test")
    p.add_argument("--max-train", type=int, help="use only the first N train images (the files are pre-shuffled)")
    p.add_argument("--max-test", type=int, help="use only the first N test images (default: the whole test split)")
    p.add_argument("--model", default="vit_tiny")
    p.add_argument("--patch-size", type=int, help="default: image size // 8")
    p.add_argument("--img-size", type=int, help="default: the stored image size")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--cache", help="feature cache folder (a rerun then skips the encoder pass)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0, help="probe seed (the encoder init is always seed 0)")
    p.add_argument("--skip-encoder", action="store_true", help="raw-pixel baselines only")
    args = p.parse_args(argv)

    t_start = time.perf_counter()
    with np.load(local_npz(args.data) or args.data, allow_pickle=False) as npz:  # a dataset name or a path
        stored = int(npz["x_train"].shape[1])
    img_size = args.img_size or stored
    patch = args.patch_size or max(1, img_size // 8)
    device = torch.device(args.device)
    out: dict = {
        "data": os.path.basename(args.data),
        "model": args.model,
        "patch_size": patch,
        "img_size": img_size,
        "results": [],
    }
    timings: dict = {}

    if not args.skip_encoder:
        enc = load_encoder(f"random:{args.model}", patch_size=patch, img_size=img_size, device=device)
        train_ds, test_ds = eval_datasets(args.data, img_size, max_train=args.max_train, max_test=args.max_test)
        key = (*data_key(args.data), "", img_size)
        t0 = time.perf_counter()
        # One encoder pass for both poolings: the last of the 4 concatenated layer means is "avg".
        feats = {
            split: features_for(
                enc,
                ds,
                "avg_last4",
                device=device,
                batch_size=args.batch_size,
                cache_dir=args.cache,
                key=key + (split,),
                progress=False,
            )
            for split, ds in (("train", train_ds), ("test", test_ds))
        }
        timings["encoder_features_s"] = round(time.perf_counter() - t0, 1)
        dim = enc.embed_dim
        check = extract_features(
            enc,
            torch.utils.data.Subset(test_ds, range(min(8, len(test_ds)))),
            pooling="avg",
            device=device,
            progress=False,
        )[0]
        err = (feats["test"][0][: len(check), -dim:] - check).abs().max().item()
        if err > 1e-3:
            raise SystemExit(f"avg_last4's last block differs from avg pooling by {err}")
        for pooling in ("avg", "avg_last4"):
            tr, te = feats["train"], feats["test"]
            if pooling == "avg":
                tr, te = (tr[0][:, -dim:].contiguous(), tr[1]), (te[0][:, -dim:].contiguous(), te[1])
            for task in ("linear", "knn"):
                t0 = time.perf_counter()
                r = run_probe(task, tr, te, device=device, seed=args.seed).to_dict()
                row = {
                    "encoder": f"random:{args.model}",
                    "pooling": pooling,
                    "probe": task,
                    "top1": r["top1"],
                    "n_train": len(tr[0]),
                    "n_test": len(te[0]),
                    "probe_s": round(time.perf_counter() - t0, 1),
                }
                if task == "linear":
                    row.update(best_lr=r["best_lr"], best_wd=r["best_wd"], val_top1=r["val_top1"])
                else:
                    row.update({k: r[k] for k in r if k.startswith("k") and k.endswith("_top1")})
                if "top5" in r:
                    row["top5"] = r["top5"]
                out["results"].append(row)

    t0 = time.perf_counter()
    (ptr, pte) = pixel_features(
        args.data, max_train=args.max_train, max_test=args.max_test, cache_dir=args.cache, seed=0
    )
    timings["pixel_features_s"] = round(time.perf_counter() - t0, 1)
    for probe in ("linear", "sklearn_logreg"):
        t0 = time.perf_counter()
        if probe == "linear":
            r = run_probe("linear", ptr, pte, device=device, seed=args.seed).to_dict()
        else:  # the data README's check: sklearn LogisticRegression (C=1, lbfgs) on the same features
            r = logistic_regression_probe(*ptr, *pte).to_dict()
        row = {
            "encoder": "pixels",
            "pooling": f"pca{ptr[0].shape[1]}",
            "probe": probe,
            "top1": r["top1"],
            "n_train": len(ptr[0]),
            "n_test": len(pte[0]),
            "probe_s": round(time.perf_counter() - t0, 1),
        }
        if "top5" in r:
            row["top5"] = r["top5"]
        out["results"].append(row)

    out.update(
        seconds=round(time.perf_counter() - t_start, 1),
        timings=timings,
        torch_threads=torch.get_num_threads(),
        cpu_count=os.cpu_count(),
        device=str(device),
        torch=torch.__version__,
        python=platform.python_version(),
        command="python bench/baselines.py " + " ".join(sys.argv[1:] if argv is None else argv),
    )
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
