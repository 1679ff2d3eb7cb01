"""The paper's ablations at small scale: one `bench/quality.py` run per row, equal budgets, one table.

Each row is I-JEPA with one switch changed (all are library config keys, so every row is also a plain
`openjepa pretrain --set ...` run). Rows run one after another, each for `--minutes` of pretraining,
and share a feature cache (the random-init encoder and the raw pixels are then computed once).
Prints one JSON line per row as it finishes, then a markdown table.

    python bench/ablations.py --data ../shared/data/imagenette2_64px.npz --minutes 6
    python bench/ablations.py --data ../shared/data/imagenette2_64px.npz --minutes 6 --rows ijepa pixels
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# name -> (what the paper compares, config overrides)
ROWS: dict[str, tuple[str, list[str]]] = {
    "ijepa": ("I-JEPA: multi-block masks, representation targets from the target encoder's output", []),
    "pixels": (
        "targets in pixel space (per-patch normalised pixels) instead of representations",
        ["optimization.target=pixels"],
    ),
    "random_mask": ("random-patch masking (40-60% of patches) instead of multi-block", ["mask.strategy=random"]),
    "one_block": ("one large target block (scale 0.6), the context is the rest", ["mask.strategy=block"]),
    "target_from_input": (
        "targets from the target encoder run on each target block alone (its input side)",
        ["optimization.target_from=input"],
    ),
    "pred_depth_1": ("a 1-block predictor instead of 4", ["meta.pred_depth=1"]),
    # small-scale options (not the paper's ablations; off in every paper recipe)
    "avg_targets_3": (
        "targets averaged over the target encoder's last 3 layers (data2vec)",
        ["optimization.target_layers=3"],
    ),
    "vicreg": (
        "VICReg variance (1.0) and covariance (0.04) terms on the context encoder's per-image means (C-JEPA)",
        ["optimization.var_weight=1.0", "optimization.cov_weight=0.04"],
    ),
    "sigreg": (
        "SIGReg (LeJEPA, weight 0.05) on the context encoder's per-image means",
        ["optimization.sigreg_weight=0.05"],
    ),
    "patch_fan_in": (
        "the patch embedding drawn at std 1/sqrt(fan_in) (torchvision's ViT) instead of 0.02",
        ["meta.init=patch_fan_in"],
    ),
    "mse": (
        "squared error instead of smooth-L1 (the paper writes L2; the reference trains smooth-L1)",
        ["optimization.loss=mse"],
    ),
    "wd_const": (
        "weight decay held at 0.04 instead of the cosine ramp to 0.4",
        ["optimization.final_weight_decay=0.04"],
    ),
    "two_targets": ("2 target blocks per image instead of 4", ["mask.num_pred_masks=2"]),
    "xavier": ("Xavier-uniform linears and patch embedding (MAE's ViT init) instead of std 0.02", ["meta.init=xavier"]),
    "ema_999": ("a slower target: EMA 0.999 -> 1 instead of the recipe's", ["optimization.ema=[0.999,1.0]"]),
    "two_contexts": (
        "2 context blocks per image, each predicting the same 4 targets (reference's num_enc_masks)",
        ["mask.num_enc_masks=2"],
    ),
}


def quality_command(args: argparse.Namespace, name: str) -> list[str]:
    """The bench/quality.py command line of one row."""
    cmd = [
        sys.executable,
        str(REPO / "bench" / "quality.py"),
        "--data",
        args.data,
        "--minutes",
        str(args.minutes),
        "--out",
        str(Path(args.out) / name),
        "--cache",
        str(Path(args.out) / "features"),
        "--pooling",
        args.pooling,
    ]
    if args.config:
        cmd += ["--config", args.config]
    if args.val:
        cmd += ["--val", str(args.val)]
    for override in ROWS[name][1] + args.overrides:
        cmd += ["--set", override]
    return cmd


def markdown(rows: list[dict]) -> str:
    """The ablation table."""
    lines = [
        "| row | change | epochs | I-JEPA linear | I-JEPA kNN | random linear | pixels linear |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['row']} | {ROWS[r['row']][0]} | {r['epochs']} | {r['ijepa_linear_top1']:.4f} | "
            f"{r['ijepa_knn_top1']:.4f} | {r['random_linear_top1']:.4f} | {r['pixels_linear_top1']:.4f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--minutes", type=float, required=True, help="pretraining budget of each row")
    ap.add_argument("--config", help="recipe (default: the shipped one for the dataset)")
    ap.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    ap.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="applied to every row"
    )
    ap.add_argument("--out", default="runs/ablations", help="folder for the rows' runs (must not hold them yet)")
    ap.add_argument("--pooling", default="avg_last4", choices=["avg", "avg_last4"])
    ap.add_argument("--val", type=int, default=0, help="evaluate on the last N train images (tuning mode)")
    ap.add_argument("--dry-run", action="store_true", help="print each row's command and stop")
    args = ap.parse_args()

    results = []
    for name in args.rows:
        cmd = quality_command(args, name)
        if args.dry_run:
            print(shlex.join(cmd))
            continue
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"row {name!r} failed ({shlex.join(cmd)}):\n{out.stderr[-3000:]}")
        res = json.loads(out.stdout.strip().splitlines()[-1])
        res.update(row=name, command=shlex.join(cmd[1:]))
        results.append(res)
        print(json.dumps(res), flush=True)
    if results:
        table = markdown(results)
        (Path(args.out) / "ablations.md").write_text(table + "\n")
        print(table)


if __name__ == "__main__":
    main()
