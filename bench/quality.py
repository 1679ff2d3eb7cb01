"""Representation quality at small scale: pretrain for M minutes, then probe against the floors.

Pretrains I-JEPA from scratch within a wall-clock budget on this machine (the schedule is sized to
the budget), then evaluates on the test split, in the same run: the target encoder (linear probe and
kNN), the same architecture at its random initialisation, and raw pixels (PCA-100). Prints one JSON line.

    python bench/quality.py --data ../shared/data/cifar10_32px.npz --minutes 60
    python bench/quality.py --data ../shared/data/imagenette2_64px.npz --minutes 60 --config imagenette64_vit_tiny_p8
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from openjepa.config import recipe_path
from openjepa.evaluate.runner import evaluate_encoder
from openjepa.train.budget import budgeted_config
from openjepa.train.checkpoint import load_checkpoint
from openjepa.train.loop import build_model, fit

RECIPE_FOR = {"cifar10": "cifar10_vit_tiny_p4", "imagenette": "imagenette64_vit_tiny_p8"}


def default_recipe(data: str) -> str:
    """The shipped small-scale recipe for a dataset file name."""
    for key, recipe in RECIPE_FOR.items():
        if key in Path(data).name:
            return recipe
    raise SystemExit(f"no default recipe for {data}; pass --config")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help=".npz dataset (x_train, y_train, x_test, y_test)")
    ap.add_argument("--minutes", type=float, required=True, help="pretraining wall-clock budget")
    ap.add_argument("--config", help="recipe (default: the shipped one for the dataset)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default="runs/quality", help="run folder (must be new)")
    ap.add_argument("--pooling", default="avg", choices=["avg", "avg_last4"])
    ap.add_argument("--max-test", type=int, help="evaluate on the first N test images only")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    recipe = recipe_path(args.config or default_recipe(args.data))
    overrides = [f"data.dataset={args.data}", f"logging.folder={args.out}", *args.overrides]
    cfg, step_s = budgeted_config(recipe, overrides, args.minutes)
    t0 = time.perf_counter()
    result = fit(cfg, progress=False)
    train_minutes = (time.perf_counter() - t0) / 60

    learned = build_model(cfg).target_encoder
    learned.load_state_dict(load_checkpoint(result.checkpoint)["target_encoder"])
    random_init = build_model(cfg).target_encoder  # the initialisation this run started from

    def top1(encoder, task: str) -> float:
        return round(evaluate_encoder(encoder, args.data, task, pooling=args.pooling, max_test=args.max_test,
                                      progress=False)["top1"], 4)

    print(json.dumps({
        "dataset": Path(args.data).name, "minutes": args.minutes, "epochs": result.epochs_completed,
        "steps": result.steps, "train_minutes": round(train_minutes, 1), "seconds_per_step": round(step_s, 3),
        "recipe": recipe.stem, "overrides": args.overrides, "pooling": args.pooling,
        "ijepa_linear_top1": top1(learned, "linear"), "ijepa_knn_top1": top1(learned, "knn"),
        "random_linear_top1": top1(random_init, "linear"), "random_knn_top1": top1(random_init, "knn"),
        "pixels_linear_top1": round(evaluate_encoder("pixels", args.data, "linear", max_test=args.max_test,
                                                     progress=False)["top1"], 4),
    }))


if __name__ == "__main__":
    main()
