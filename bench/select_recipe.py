"""Honest recipe selection: score variants on a validation split carved from train, then run the winner on test.

Each variant is a set of config overrides. Every variant runs `bench/quality.py --val N` (pretraining
and probes never see the test split), concurrently when `--parallel` > 1 (a GPU has room for several
small runs); the variant with the best validation linear-probe top-1 is then pretrained again on the
whole train split and evaluated on test. Prints one JSON line with every validation score and the
final result, and writes it to <out>/select.json. `--resume` reuses the validation (and final) results
already in <out>, so a selection can be interrupted or widened with more variants without rerunning them.

    python bench/select_recipe.py --data ../shared/data/imagenette2_64px.npz --config imagenette64_vit_tiny_p4 \\
        --val 500 --val-epochs 50 --epochs 120 --minutes 3.4 --parallel 3 --set data.num_workers=4 \\
        --variant "vit_small:meta.model_name=vit_small" \\
        --variant "vit_small_ema998:meta.model_name=vit_small;optimization.ema=[0.998,1.0]" \\
        --variant "vit_tiny:"
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

QUALITY = str(Path(__file__).with_name("quality.py"))


def parse_variant(text: str) -> tuple[str, list[str]]:
    """'name:key=value;key=value' -> (name, overrides); 'name:' is the recipe as shipped."""
    name, _, rest = text.partition(":")
    if not name:
        raise SystemExit(f"--variant {text!r}: expected NAME:KEY=VALUE;KEY=VALUE (or NAME: for no overrides)")
    return name, [s for s in rest.split(";") if s]


def quality_cmd(
    args: argparse.Namespace, out: Path, overrides: list[str], epochs: int, val: int, minutes: float
) -> list[str]:
    """One bench/quality.py run; epochs 0 sizes the schedule to `minutes` of measured step time."""
    cmd = [
        sys.executable,
        QUALITY,
        "--data",
        args.data,
        "--minutes",
        str(minutes),
        "--pooling",
        args.pooling,
        "--out",
        str(out),
    ]
    if epochs:
        cmd += ["--epochs", str(epochs)]
    if args.config:
        cmd += ["--config", args.config]
    if val:
        cmd += ["--val", str(val), "--no-floors"]  # the floors do not depend on the variant
    for o in [*args.set, *overrides]:
        cmd += ["--set", o]
    return cmd


def run_all(cmds: dict[str, list[str]], parallel: int, logs: Path) -> dict[str, dict]:
    """Run the commands, `parallel` at a time; each one's last stdout line is its JSON result."""
    results, pending, running = {}, list(cmds.items()), {}
    while pending or running:
        while pending and len(running) < parallel:
            name, cmd = pending.pop(0)
            log = open(logs / f"{name}.log", "w")
            running[name] = (subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True), log)
        name = next(iter(running))
        proc, log = running.pop(name)
        stdout, _ = proc.communicate()
        log.close()
        lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
        results[name] = (
            json.loads(lines[-1])
            if proc.returncode == 0 and lines
            else {"error": f"exit {proc.returncode}; see {logs / (name + '.log')}"}
        )
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--config")
    ap.add_argument("--variant", action="append", required=True, metavar="NAME:KEY=VALUE;...")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="overrides for every run")
    ap.add_argument("--val", type=int, required=True, help="validation images held out from the end of train")
    ap.add_argument(
        "--val-epochs",
        type=int,
        required=True,
        help="schedule length of the validation runs (0: sized to --val-minutes of measured step time)",
    )
    ap.add_argument(
        "--epochs",
        type=int,
        required=True,
        help="schedule length of the final run (0: sized to --minutes of measured step time)",
    )
    ap.add_argument("--minutes", type=float, default=60, help="wall-clock budget (or cap) of the final run")
    ap.add_argument(
        "--val-minutes", type=float, help="wall-clock budget (or cap) of each validation run (default: --minutes)"
    )
    ap.add_argument("--pooling", default="avg_last4", choices=["avg", "avg_last4"])
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--out", default="runs/select")
    ap.add_argument(
        "--resume",
        action="store_true",
        help="reuse the validation results already in --out (same settings), run only the missing ones",
    )
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=args.resume)
    variants = dict(parse_variant(v) for v in args.variant)
    val_minutes = args.val_minutes if args.val_minutes is not None else args.minutes
    val, todo = {}, {}
    for n, o in variants.items():
        done = out / f"val-{n}" / "quality.json"
        if done.exists():
            val[n] = json.loads(done.read_text())
            if val[n].get("overrides") != [*args.set, *o]:
                raise SystemExit(
                    f"{done} was run with overrides {val[n].get('overrides')}, not {[*args.set, *o]}; "
                    f"use another --out or rename the variant"
                )
        elif (out / f"val-{n}").exists():
            raise SystemExit(f"{out / f'val-{n}'} holds an unfinished run; delete it to rerun variant {n!r}")
        else:
            todo[n] = quality_cmd(args, out / f"val-{n}", o, args.val_epochs, args.val, val_minutes)
    val.update(run_all(todo, args.parallel, out))
    val = {n: val[n] for n in variants}
    scored = {n: r["ijepa_linear_top1"] for n, r in val.items() if "ijepa_linear_top1" in r}
    if not scored:
        raise SystemExit(f"every validation run failed: {val}")
    best = max(scored, key=scored.get)
    line = {
        "data": Path(args.data).name,
        "config": args.config,
        "val_holdout": args.val,
        "val_epochs": args.val_epochs,
        "val_minutes": val_minutes,
        "val": {
            n: {
                k: r.get(k)
                for k in ("ijepa_linear_top1", "ijepa_knn_top1", "epochs", "steps", "seconds_per_step", "error")
            }
            for n, r in val.items()
        },
        "selected": best,
        "selected_overrides": variants[best],
    }
    (out / "select.json").write_text(json.dumps(line) + "\n")  # kept even if the final run fails
    done = out / f"final-{best}" / "quality.json"
    if args.resume and done.exists():
        final = json.loads(done.read_text())
    else:
        final = run_all(
            {f"final-{best}": quality_cmd(args, out / f"final-{best}", variants[best], args.epochs, 0, args.minutes)},
            1,
            out,
        )[f"final-{best}"]
    line["final"] = final
    (out / "select.json").write_text(json.dumps(line) + "\n")
    print(json.dumps(line))


if __name__ == "__main__":
    main()
