"""Draw the kNN-vs-training-time curves of several `bench/quality.py --knn-every` runs in one figure.

python bench/plot_knn_curves.py runs/cifar10_60min runs/imagenette_25min --out docs/assets/knn_vs_time.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from openjepa.viz import plot_knn_curves


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run folders holding quality.json (from bench/quality.py)")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--x", default="minutes", choices=["minutes", "epoch"])
    args = ap.parse_args()
    curves = {}
    for run in args.runs:
        res = json.loads((Path(run) / "quality.json").read_text())
        if "knn_curve" not in res:
            raise SystemExit(f"{run}: no kNN curve (run bench/quality.py with --knn-every N)")
        curves[f"{res['dataset']}, {res['minutes']:g} min"] = res["knn_curve"]
    print(plot_knn_curves(curves, args.out, x=args.x))


if __name__ == "__main__":
    main()
