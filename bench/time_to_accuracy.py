"""Time to accuracy: several recipes for the same wall time, probed as they train, on one chart.

Each variant pretrains once per seed within `--minutes` (the schedule is sized to the budget). It
checkpoints every `--every` minutes of training time, and every checkpoint's target encoder is then
probed on the test split (linear and kNN, the default evaluation). The floors are measured in the
same run: the architecture at its random initialisation and raw pixels (PCA-100). Prints one JSON
line with:
- each variant's curve: mean and spread over its seeds at each checkpoint;
- the minutes each variant takes to reach fixed levels;
- the floors.
Draws `<out>/time_to_accuracy.png`: kNN and linear top-1 against minutes, one line per variant
(the band is the spread over seeds), with the floors dashed.

    python bench/time_to_accuracy.py --data cifar10 --minutes 30 --every 5 --seeds 0 1 2 \\
        --variant "shipped:" --variant "bf16:meta.precision=bf16" --out runs/tta

Choose recipes on a validation split (`--val N`: the last N train images become the test split, and
pretraining never sees them); report the chosen one on test. `--pooling` picks what the probes read
(default: each task's default). Every finished (variant, seed) curve is written to
`<out>/partial.json` as it completes, so an interrupted bench keeps what it measured; the same command
with `--resume` (more seeds or variants may be added) reuses those curves and runs only the rest. A
run that was interrupted midway is set aside (renamed, never deleted) and started again.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path

import torch
from quality import validation_split  # bench/ is on sys.path when run as a script

from openjepa.config import recipe_path
from openjepa.core.checkpoint import list_checkpoints, load_checkpoint
from openjepa.core.distributed import resolve_device
from openjepa.core.precision import cpu_summary, flush_denormals
from openjepa.evaluate.runner import evaluate_encoder
from openjepa.models.build import build_model
from openjepa.train.budget import budgeted_config
from openjepa.train.loop import fit

TASKS = ("linear", "knn")


def parse_variant(text: str) -> tuple[str, list[str]]:
    """'name:key=value;key=value' -> (name, overrides); 'name:' is the recipe as shipped."""
    name, sep, rest = text.partition(":")
    if not sep or not name:
        raise SystemExit(f"--variant {text!r}: expected NAME:KEY=VALUE;KEY=VALUE (or NAME: for the recipe)")
    return name, [o for o in rest.split(";") if o]


def checkpoint_minutes(folder: Path, path: Path) -> float:
    """Wall minutes from the run's start (its params-ijepa.yaml, written as fit begins) to a checkpoint."""
    return (path.stat().st_mtime - (folder / "params-ijepa.yaml").stat().st_mtime) / 60


def probe(encoder: torch.nn.Module | str, args: argparse.Namespace, device: torch.device, cache: Path) -> dict:
    """Linear and kNN top-1 of an encoder (or "pixels") on the test split."""
    return {
        task: round(
            evaluate_encoder(
                encoder,
                args.eval_data,
                task,
                pooling=None if encoder == "pixels" else args.pooling,
                max_test=args.max_test,
                device=device,
                cache_dir=cache,
                progress=False,
            ).top1,
            4,
        )
        for task in TASKS
    }


def random_inits(variants: list[tuple[str, list[str]]], args: argparse.Namespace) -> dict[str, torch.nn.Module]:
    """The base recipe's encoder at random init, plus one per variant whose overrides change it (init,
    depth, width): each variant is then compared with the floor it actually started from."""

    def initial(overrides: list[str]) -> torch.nn.Module:
        base = [f"data.dataset={args.eval_data}", *args.overrides, *overrides]
        return build_model(budgeted_config(recipe_path(args.config), base, 0.01)[0]).target_encoder

    base = initial([])
    out = {"random init": base}
    for name, overrides in variants:
        enc = initial(overrides)
        a, b = base.state_dict(), enc.state_dict()
        if a.keys() != b.keys() or any(a[k].shape != b[k].shape or not torch.equal(a[k], b[k]) for k in a):
            out[f"random init ({name})"] = enc
    return out


SETTINGS = ("data", "config", "minutes", "every", "val", "overrides", "pooling", "max_test")


def load_finished(args: argparse.Namespace, variants: list[tuple[str, list[str]]]) -> dict[str, dict[int, list]]:
    """The curves a previous call with the same settings finished ({variant: {seed: curve}}), for --resume."""
    path = Path(args.out) / "partial.json"
    if not args.resume or not path.exists():
        return {}
    saved = json.loads(path.read_text())
    if "settings" not in saved:
        raise SystemExit(f"--resume: {path} records no settings (written before --resume existed); use a new --out")
    for key in SETTINGS:
        if saved["settings"].get(key) != getattr(args, key):
            raise SystemExit(
                f"--resume: {path} was measured with --{key.replace('_', '-')} {saved['settings'].get(key)!r}, "
                f"this call asks {getattr(args, key)!r}; repeat the earlier settings or use a new --out"
            )
    for name, overrides in variants:
        if saved["variants"].get(name, overrides) != overrides:
            raise SystemExit(
                f"--resume: variant {name!r} was run with {saved['variants'][name]}, this call gives {overrides}; "
                "rename the variant or use a new --out"
            )
    return {name: {int(seed): curve for seed, curve in per.items()} for name, per in saved["finished"].items()}


def save_finished(args: argparse.Namespace, variants: dict[str, list[str]], finished: dict) -> None:
    """Write <out>/partial.json: every finished (variant, seed) curve with the settings it was measured with."""
    line = {"settings": {key: getattr(args, key) for key in SETTINGS}, "variants": variants, "finished": finished}
    line["runs"] = {name: [per[s] for s in sorted(per)] for name, per in finished.items()}
    tmp = Path(args.out) / "partial.json.tmp"
    tmp.write_text(json.dumps(line) + "\n")
    tmp.replace(Path(args.out) / "partial.json")  # never a half-written file


def set_aside(folder: Path, resume: bool) -> None:
    """Move an unfinished run's folder out of the way (with --resume), never deleting a checkpoint."""
    if not folder.exists():
        return
    if not resume:
        raise SystemExit(
            f"{folder} holds an earlier run; repeat the command with --resume to keep the finished runs of "
            "this --out (the unfinished one is set aside and rerun), or use a new --out"
        )
    k = 1
    while folder.with_name(f"{folder.name}.interrupted-{k}").exists():
        k += 1
    folder.rename(folder.with_name(f"{folder.name}.interrupted-{k}"))
    logging.warning("%s was not finished: moved to %s.interrupted-%d and started again", folder, folder.name, k)


def run_one(name: str, overrides: list[str], seed: int, args: argparse.Namespace) -> list[dict]:
    """Pretrain one (variant, seed) and probe each of its checkpoints: [{minutes, step, linear, knn}]."""
    out = Path(args.out) / f"{name}-s{seed}"
    set_aside(out, args.resume)
    base = [f"data.dataset={args.eval_data}", f"logging.folder={out}", f"meta.seed={seed}", *args.overrides, *overrides]
    cfg, step_s = budgeted_config(recipe_path(args.config), base, args.minutes)
    # Checkpoint spacing follows from the measured step time; set here, not by a second measurement.
    cfg.logging.checkpoint_every_steps = max(1, round(60 * args.every / step_s))
    cfg.logging.keep_last = 100000
    cfg.logging.checkpoint_every_epochs = 10**6  # epoch ends would add probes off the --every grid; the last one stays
    fit(cfg, progress=False)
    device = resolve_device(cfg.meta.device)
    curve = []
    for step, path in list_checkpoints(out):
        encoder = build_model(cfg).target_encoder
        encoder.load_state_dict(load_checkpoint(path)["target_encoder"])
        point = {"step": step, "minutes": round(checkpoint_minutes(out, path), 2)}
        curve.append({**point, **probe(encoder, args, device, out / "features")})
    return curve


def summarise(curves: list[list[dict]]) -> list[dict]:
    """Mean and spread over seeds, point by point (seeds share the checkpoint spacing)."""
    points = []
    for same in zip(*curves):
        row: dict = {"minutes": round(statistics.fmean(p["minutes"] for p in same), 2)}
        for task in TASKS:
            values = [p[task] for p in same]
            row[task] = round(statistics.fmean(values), 4)
            row[f"{task}_min"], row[f"{task}_max"] = min(values), max(values)
            row[f"{task}_std"] = round(statistics.stdev(values), 4) if len(values) > 1 else 0.0
        points.append(row)
    return points


def minutes_to(points: list[dict], task: str, level: float) -> float | None:
    """The first checkpoint's minutes at which the mean reaches `level`, or None."""
    return next((p["minutes"] for p in points if p[task] >= level), None)


def plot(summary: dict[str, list[dict]], floors: dict[str, dict], out_png: Path) -> None:
    """kNN and linear top-1 against minutes; bands are the spread over seeds; floors dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for ax, task in zip(axes, ("knn", "linear")):
        for name, points in summary.items():
            xs = [p["minutes"] for p in points]
            (line,) = ax.plot(xs, [p[task] for p in points], marker="o", label=name)
            lo, hi = [p[f"{task}_min"] for p in points], [p[f"{task}_max"] for p in points]
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2)
        for label, values in floors.items():
            ax.axhline(values[task], linestyle="--", color="grey")
            # x in axes fraction: the label stays in view however the minutes axis is scaled
            ax.annotate(
                label, (0.01, values[task]), xycoords=("axes fraction", "data"), fontsize=8, color="grey", va="bottom"
            )
        ax.set_title(f"{task} top-1")
        ax.set_xlabel("training minutes")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="dataset spec (a name such as cifar10, or an .npz)")
    ap.add_argument("--config", default="cifar10_vit_tiny_p4", help="the recipe every variant starts from")
    ap.add_argument("--minutes", type=float, required=True, help="pretraining budget of every run")
    ap.add_argument("--every", type=float, default=5.0, help="minutes of training between probed checkpoints")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--variant", action="append", default=[], help="NAME:KEY=VALUE;... (repeatable)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="override for every variant")
    ap.add_argument("--pooling", help="what the probes read (default: each task's default, as `openjepa eval`)")
    ap.add_argument("--val", type=int, default=0, help="hold out the last N train images as the test split")
    ap.add_argument("--levels", type=float, nargs="*", default=[0.45, 0.5, 0.55, 0.6])
    ap.add_argument("--max-test", type=int)
    ap.add_argument("--out", default="runs/time_to_accuracy")
    ap.add_argument("--resume", action="store_true", help="reuse the (variant, seed) runs this --out finished")
    ap.add_argument("--keep-denormals", action="store_true", help="do not flush subnormals to zero (the CLI does)")
    args = ap.parse_args()
    if not args.keep_denormals:
        flush_denormals()  # as `openjepa` does, before the first parallel op
    logging.basicConfig(level=logging.WARNING)
    variants = [parse_variant(v) for v in args.variant] or [("shipped", [])]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    args.eval_data = str(validation_split(args.data, args.val, Path(args.out) / "val.npz")) if args.val else args.data

    finished = load_finished(args, variants)
    saved_variants = dict(variants)
    if args.resume and (Path(args.out) / "partial.json").exists():
        saved_variants = {**json.loads((Path(args.out) / "partial.json").read_text())["variants"], **saved_variants}
    for name, o in variants:
        for seed in args.seeds:
            if seed in finished.get(name, {}):
                continue
            finished.setdefault(name, {})[seed] = run_one(name, o, seed, args)
            # every finished (variant, seed) is kept, so an interrupted bench loses only the run in flight
            save_finished(args, saved_variants, finished)
    runs = {name: [finished[name][seed] for seed in args.seeds] for name, _ in variants}
    summary = {name: summarise(curves) for name, curves in runs.items()}
    cfg, _ = budgeted_config(recipe_path(args.config), [f"data.dataset={args.eval_data}", *args.overrides], 0.01)
    device = resolve_device(cfg.meta.device)
    floors = {
        label: probe(encoder, args, device, Path(args.out) / "features")
        for label, encoder in random_inits(variants, args).items()
    }
    floors["raw pixels"] = probe("pixels", args, device, Path(args.out) / "features")
    plot(summary, floors, Path(args.out) / "time_to_accuracy.png")
    line = {
        "bench": "time_to_accuracy",
        "data": args.data,
        "minutes": args.minutes,
        "seeds": args.seeds,
        "val_holdout": args.val,
        "pooling": args.pooling,
        "floors": floors,
        "curves": summary,
        "runs": runs,
        "minutes_to": {
            name: {f"{task}>={lv}": minutes_to(points, task, lv) for task in TASKS for lv in args.levels}
            for name, points in summary.items()
        },
        "cpu": cpu_summary(),
        "torch": torch.__version__,
    }
    (Path(args.out) / "time_to_accuracy.json").write_text(json.dumps(line) + "\n")
    print(json.dumps(line))


if __name__ == "__main__":
    main()
