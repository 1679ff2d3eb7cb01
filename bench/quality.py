"""Representation quality at small scale: pretrain for M minutes, then probe against the floors.

Pretrains I-JEPA from scratch within a wall-clock budget on this machine (the schedule is sized to
the budget), then evaluates on the test split, in the same run: the target encoder (linear probe and
kNN), the same architecture at its random initialisation, and raw pixels (PCA-100). Prints one JSON line.

    python bench/quality.py --data ../shared/data/cifar10_32px.npz --minutes 60
    python bench/quality.py --data ../shared/data/imagenette2_64px.npz --minutes 60 --config imagenette64_vit_tiny_p8

Tuning mode (`--val N`): the last N train images become the evaluation split, so recipes are chosen
without looking at the test split. `--knn-every E` records a kNN curve (also drawn as
<out>/knn_vs_time.png); <out>/pca_maps.png shows the learned patch features; <out>/quality.json
holds the printed line.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from openjepa.config import load_config, recipe_path
from openjepa.core.checkpoint import load_checkpoint
from openjepa.core.distributed import resolve_device
from openjepa.core.precision import cpu_summary, flush_denormals
from openjepa.data.build import local_npz
from openjepa.evaluate.runner import evaluate_encoder
from openjepa.models.build import build_model
from openjepa.train.budget import budgeted_config, seconds_per_step
from openjepa.train.loop import fit

RECIPE_FOR = {"cifar10": "cifar10_vit_tiny_p4", "imagenette": "imagenette64_vit_tiny_p8"}


def default_recipe(data: str) -> str:
    """The shipped small-scale recipe for a dataset file name."""
    for key, recipe in RECIPE_FOR.items():
        if key in Path(data).name:
            return recipe
    raise SystemExit(f"no default recipe for {data}; pass --config")


def validation_split(data: str, n_val: int, out: Path) -> Path:
    """An .npz whose test split is the last `n_val` train images and whose train split is the rest."""
    import numpy as np

    with np.load(local_npz(data) or data) as z:  # a dataset name or a path
        x, y = z["x_train"], z["y_train"]
    if not 0 < n_val < len(x):
        raise SystemExit(f"--val {n_val}: must be between 1 and {len(x) - 1} (the train split has {len(x)} images)")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, x_train=x[:-n_val], y_train=y[:-n_val], x_test=x[-n_val:], y_test=y[-n_val:])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help=".npz dataset (x_train, y_train, x_test, y_test)")
    ap.add_argument("--minutes", type=float, required=True, help="pretraining wall-clock budget")
    ap.add_argument("--config", help="recipe (default: the shipped one for the dataset)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default="runs/quality", help="run folder (must be new)")
    ap.add_argument("--pooling", default="avg", choices=["avg", "avg_last4"])
    ap.add_argument("--max-test", type=int, help="evaluate on the first N test images only")
    ap.add_argument(
        "--val",
        type=int,
        default=0,
        metavar="N",
        help="tuning mode: hold out the last N train images as the evaluation split (pretraining and "
        "probes then never see the test split)",
    )
    ap.add_argument("--cache", help="feature cache folder, shareable between runs (default: <out>/features)")
    ap.add_argument(
        "--knn-every",
        type=int,
        default=0,
        metavar="EPOCHS",
        help="kNN monitor (2,000 train / 1,000 test images) every N epochs, for kNN-vs-time curves",
    )
    ap.add_argument(
        "--epochs",
        type=int,
        metavar="E",
        help="a fixed schedule of E epochs (warmup 10%%) instead of one sized to --minutes, "
        "which then only caps the run (for GPUs, where the data loader can set the pace)",
    )
    ap.add_argument("--device", default="auto", help="training and evaluation device: auto, cpu, cuda, cuda:N")
    ap.add_argument(
        "--no-floors",
        dest="floors",
        action="store_false",
        help="skip the random-init and raw-pixel floors (they do not depend on mask or optimiser "
        "settings; recipe selection saves their probe time)",
    )
    ap.add_argument("--keep-denormals", action="store_true", help="do not flush subnormals to zero (the CLI does)")
    args = ap.parse_args()
    if not args.keep_denormals:
        flush_denormals()  # as `openjepa` does, before the first parallel op
    logging.basicConfig(level=logging.WARNING)

    recipe = recipe_path(args.config or default_recipe(args.data))
    if args.val:
        args.data = str(
            validation_split(args.data, args.val, Path(args.out).with_name(Path(args.out).name + "-val.npz"))
        )
    overrides = [
        f"data.dataset={args.data}",
        f"logging.folder={args.out}",
        f"meta.device={args.device}",
        *args.overrides,
    ]
    if args.knn_every:
        overrides.append(f"logging.eval_every_epochs={args.knn_every}")
    if args.epochs:
        cfg = load_config(
            recipe,
            [
                *overrides,
                f"optimization.epochs={args.epochs}",
                f"optimization.warmup={max(1, round(0.1 * args.epochs))}",
                f"optimization.max_minutes={args.minutes}",
            ],
        )
        step_s = seconds_per_step(cfg)
    else:
        cfg, step_s = budgeted_config(recipe, overrides, args.minutes)
    device = resolve_device(cfg.meta.device)
    curve: list[dict] = []
    monitor = None
    if args.knn_every:
        from openjepa.evaluate.runner import knn_monitor

        knn = knn_monitor(args.data, cfg.data.crop_size, device=device)

        def monitor(model, epoch: int) -> dict:
            minutes = (time.perf_counter() - t0) / 60
            out = knn(model, epoch)
            curve.append({"epoch": epoch, "minutes": round(minutes, 2), "knn_top1": round(out["knn_top1"], 4)})
            return out

        start = knn(build_model(cfg), 0)  # the initialisation's kNN: the curve's first point
        curve.append({"epoch": 0, "minutes": 0.0, "knn_top1": round(start["knn_top1"], 4)})

    t0 = time.perf_counter()
    result = fit(cfg, progress=False, on_epoch_end=monitor)
    train_minutes = (time.perf_counter() - t0) / 60

    learned = build_model(cfg).target_encoder
    learned.load_state_dict(load_checkpoint(result.checkpoint)["target_encoder"])
    random_init = build_model(cfg).target_encoder  # the initialisation this run started from

    def top1(encoder, task: str) -> float:
        return round(
            evaluate_encoder(
                encoder,
                args.data,
                task,
                pooling=args.pooling,
                max_test=args.max_test,
                device=device,
                cache_dir=args.cache or Path(args.out) / "features",
                progress=False,
            ).top1,
            4,
        )

    line = {
        "dataset": Path(args.data).name,
        **({"val_holdout": args.val} if args.val else {}),
        "minutes": args.minutes,
        "epochs": result.epochs_completed,
        "steps": result.steps,
        "train_minutes": round(train_minutes, 1),
        "seconds_per_step": round(step_s, 3),
        "recipe": recipe.stem,
        "overrides": args.overrides,
        "pooling": args.pooling,
        "ijepa_linear_top1": top1(learned, "linear"),
        "ijepa_knn_top1": top1(learned, "knn"),
        **(
            {
                "random_linear_top1": top1(random_init, "linear"),
                "random_knn_top1": top1(random_init, "knn"),
                "pixels_linear_top1": round(
                    evaluate_encoder(
                        "pixels", args.data, "linear", max_test=args.max_test, device=device, progress=False
                    ).top1,
                    4,
                ),
            }
            if args.floors
            else {}
        ),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu": cpu_summary(),
        **({"knn_curve": curve} if curve else {}),
    }
    write_figures(args, cfg, learned, curve)
    (Path(args.out) / "quality.json").write_text(json.dumps(line) + "\n")
    print(json.dumps(line))


def write_figures(args: argparse.Namespace, cfg, encoder, curve: list[dict]) -> None:
    """The run's kNN-vs-time curve and PCA maps of the learned patch features, next to its checkpoints."""
    from openjepa.evaluate.runner import eval_datasets
    from openjepa.viz import plot_knn_curves, plot_pca_maps

    out = Path(args.out)
    if curve:
        plot_knn_curves({f"{Path(args.data).stem} ({args.minutes:g} min)": curve}, out / "knn_vs_time.png")
    _, test = eval_datasets(args.data, cfg.data.crop_size, max_test=64)
    imgs = torch.stack([test[i][0] for i in range(len(test))])
    with torch.no_grad():
        tokens = encoder.cpu().eval()(imgs)  # evaluation may have left it on the GPU
    plot_pca_maps(imgs, tokens, tuple(encoder.grid_size), out / "pca_maps.png")
    plot_pca_maps(imgs, tokens, tuple(encoder.grid_size), out / "pca_maps_content.png", center_positions=True)


if __name__ == "__main__":
    main()
