"""What the probe should read: layer choices, spatial pooling and kNN normalisation, scored on validation.

For each given run (its last checkpoint, or `--step`), the target encoder's per-layer token means
over the 4 quadrants of the image (`grid_all` pooling) are extracted once on a validation split
carved from train (`--val N`: the last N train images are scored, the rest fit the probes; `--val 0`
scores the data's own test split, for a held-out draw that is not a benchmark's test set). Each
readout is a slice of those features: the last layer (`avg`, the paper's linear-probe readout), the
last 2, the last 4 (`avg_last4`, the paper's low-shot readout) and all layers (`avg_all`), each as
whole-image means (the quadrants averaged) and, prefixed `grid_`, as the quadrant means side by side.
kNN is scored on raw features (L2-normalised, DINO's protocol) and on standardised ones (train mean
and std, then L2). The random-init encoder is scored the same way. Prints one JSON line.

    python bench/readout.py --data ../shared/data/cifar10_32px.npz --val 5000 --run runs/tta15/shipped-s0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from quality import validation_split  # bench/ is on sys.path when run as a script

from openjepa.config import load_config
from openjepa.core.checkpoint import list_checkpoints, load_checkpoint
from openjepa.core.precision import cpu_summary
from openjepa.evaluate.features import extract_features
from openjepa.evaluate.knn import knn_eval
from openjepa.evaluate.linear import linear_probe
from openjepa.models.build import build_model
from openjepa.models.pooling import GRID

CELLS = GRID * GRID


def readouts(depth: int, dim: int) -> dict[str, slice]:
    """Column slices of `avg_all` features (oldest layer first) for each layer choice."""
    out = {"last1": slice((depth - 1) * dim, depth * dim)}
    for n in (2, 4):
        if n < depth:
            out[f"last{n}"] = slice((depth - n) * dim, depth * dim)
    out[f"all{depth}"] = slice(0, depth * dim)
    return out


def standardised(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both splits centred and scaled by the train split's per-feature statistics."""
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return (train - mean) / std, (test - mean) / std


def whole_image(grid: torch.Tensor, depth: int, dim: int) -> torch.Tensor:
    """`grid_all` features (N, L*CELLS*D) -> `avg_all` ones (N, L*D): each layer's quadrant means averaged."""
    return grid.view(len(grid), depth, CELLS, dim).mean(dim=2).flatten(1)


def score(encoder: torch.nn.Module, data: str, img_size: int) -> dict:
    """Linear and kNN top-1 of every readout of one encoder."""
    from openjepa.evaluate.runner import eval_datasets

    train_ds, test_ds = eval_datasets(data, img_size)
    gtr, ytr = extract_features(encoder, train_ds, pooling="grid_all", progress=False)
    gte, yte = extract_features(encoder, test_ds, pooling="grid_all", progress=False)
    depth, dim = len(encoder.blocks), encoder.embed_dim  # type: ignore[arg-type]
    pairs = [("", whole_image(gtr, depth, dim), whole_image(gte, depth, dim), dim), ("grid_", gtr, gte, CELLS * dim)]
    slices = [
        (prefix + name, xtr[:, cols], xte[:, cols])
        for prefix, xtr, xte, d in pairs
        for name, cols in readouts(depth, d).items()
    ]
    rows = {}
    for name, a, b in slices:
        sa, sb = standardised(a, b)
        rows[name] = {
            "linear": round(linear_probe(a, ytr, b, yte).top1, 4),
            "knn": round(knn_eval(a, ytr, b, yte).top1, 4),
            "knn_standardised": round(knn_eval(sa, ytr, sb, yte).top1, 4),
        }
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="dataset (.npz or a name) whose train split is carved")
    ap.add_argument(
        "--val",
        type=int,
        required=True,
        help="last N train images scored; the rest fit the probes (0: score the data's own test split, for a"
        " held-out draw that is not the benchmark's test set, such as a generated dataset of another seed)",
    )
    ap.add_argument("--run", action="append", required=True, help="run folder (repeatable)")
    ap.add_argument("--step", type=int, help="checkpoint step (default: the last)")
    ap.add_argument("--out", default="runs/readout")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = args.data if args.val == 0 else str(validation_split(args.data, args.val, out / "val.npz"))
    result: dict = {"bench": "readout", "data": args.data, "val_holdout": args.val, "runs": {}}
    cfg = None
    for run in args.run:
        cfg = load_config(Path(run) / "params-ijepa.yaml")
        ckpts = dict(list_checkpoints(Path(run)))
        step = args.step if args.step is not None else max(ckpts)
        encoder = build_model(cfg).target_encoder
        encoder.load_state_dict(load_checkpoint(ckpts[step])["target_encoder"])
        result["runs"][f"{run}@{step}"] = score(encoder, data, cfg.data.crop_size)
    assert cfg is not None
    result["random_init"] = score(build_model(cfg).target_encoder, data, cfg.data.crop_size)
    result.update(cpu=cpu_summary(), torch=torch.__version__)
    (out / "readout.json").write_text(json.dumps(result) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
