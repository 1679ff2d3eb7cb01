"""`openjepa pretrain --config FILE [--set key=value ...] [--resume] [--slurm ...]`.

Under torchrun (or srun) every process runs this command; rank 0 alone logs at INFO, writes the
plots and prints the summary. With `--slurm` nothing trains here: an sbatch script is written
(and submitted unless `--dry-run`).
"""

from __future__ import annotations

import argparse
import json
import logging

from ..config import load_config, recipe_path

logger = logging.getLogger("openjepa.cli")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `openjepa pretrain`."""
    p.add_argument("--config", "--fname", dest="config", help="YAML recipe (ours or the reference's schema)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override, repeatable: --set optimization.lr=5e-4",
    )
    p.add_argument("overrides_pos", nargs="*", metavar="KEY=VALUE", help="more dotted overrides")
    p.add_argument(
        "--data",
        help="dataset spec (x.npz, folder:DIR, shapes:N, shards:DIR/shard-{000000..000099}.tar, "
        "shards:DIR); sets data.dataset",
    )
    p.add_argument("--out", help="run folder; sets logging.folder")
    p.add_argument("--resume", action="store_true", help="continue from the newest good checkpoint in the run folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    s = p.add_argument_group("SLURM (write an sbatch script for this run instead of training here)")
    s.add_argument("--slurm", action="store_true", help="write {out}/slurm/pretrain.sbatch and submit it with sbatch")
    s.add_argument("--dry-run", action="store_true", help="with --slurm: write the script, do not submit")
    s.add_argument("--nodes", type=int, default=1, help="nodes (default 1)")
    s.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node = tasks per node (default 8)")
    s.add_argument("--cpus-per-gpu", type=int, default=10, help="CPU cores per task (default 10)")
    s.add_argument("--time", default="72:00:00", help="time limit per job (the job requeues itself; default 72:00:00)")
    s.add_argument("--partition", help="SLURM partition")
    s.add_argument("--account", help="SLURM account")
    s.add_argument("--qos", help="SLURM QOS")
    s.add_argument("--mem", help="memory per node (e.g. 0 for all)")
    s.add_argument("--constraint", help="node features (e.g. a100)")
    s.add_argument(
        "--signal-seconds",
        type=int,
        default=300,
        help="SIGUSR1 this many seconds before the time limit: checkpoint and requeue (default 300)",
    )
    s.add_argument(
        "--slurm-setup",
        action="append",
        default=[],
        metavar="LINE",
        help="shell line run before srun (module load ..., source venv/bin/activate), repeatable",
    )
    s.add_argument(
        "--sbatch-arg",
        action="append",
        default=[],
        metavar="OPTION",
        help="extra #SBATCH option, e.g. --sbatch-arg=--exclusive, repeatable",
    )


def overrides_from(args: argparse.Namespace) -> list[str]:
    """Every override the command line gives, --data/--out included."""
    extra = list(args.overrides) + list(getattr(args, "overrides_pos", []))
    if getattr(args, "data", None):
        extra.append(f"data.dataset={args.data}")
    if getattr(args, "out", None):
        extra.append(f"logging.folder={args.out}")
    return extra


def run_slurm(args: argparse.Namespace) -> int:
    """Write (and submit) the sbatch script of this run."""
    from ..launch.slurm import SlurmOptions, submit, write_job

    cfg = load_config(recipe_path(args.config) if args.config else None, overrides_from(args))
    opts = SlurmOptions(
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        cpus_per_gpu=args.cpus_per_gpu,
        time=args.time,
        partition=args.partition,
        account=args.account,
        qos=args.qos,
        mem=args.mem,
        constraint=args.constraint,
        signal_seconds=args.signal_seconds,
        setup=list(args.slurm_setup),
        extra=list(args.sbatch_arg),
    )
    script = write_job(cfg, opts)
    global_batch = cfg.data.batch_size * opts.world_size * cfg.optimization.accum_steps
    out = {"script": str(script), "processes": opts.world_size, "global_batch": global_batch}
    if global_batch != cfg.optimization.lr_reference_batch:
        logger.warning(
            "global batch %d (data.batch_size %d x %d GPUs x optimization.accum_steps %d) differs from "
            "the paper's %d; see docs/scaling.md",
            global_batch,
            cfg.data.batch_size,
            opts.world_size,
            cfg.optimization.accum_steps,
            cfg.optimization.lr_reference_batch,
        )
    if not args.dry_run:
        out["job_id"] = submit(script)
    print(json.dumps(out))
    return 0


def run(args: argparse.Namespace) -> int:
    """Pretrain (on every process of a distributed launch), then write the run's plots on rank 0."""
    if getattr(args, "slurm", False):
        return run_slurm(args)
    from ..core.distributed import cleanup, init_distributed
    from ..train.loop import EXIT_REQUEUE, fit
    from ..viz.run_plots import write_run_plots

    cfg = load_config(recipe_path(args.config) if args.config else None, overrides_from(args))
    env = init_distributed(cfg.meta.device)
    if not env.is_main:  # rank-0-only logging: other ranks report warnings and errors only
        logging.getLogger("openjepa").setLevel(logging.WARNING)
    try:
        monitor = None
        if env.is_main and cfg.logging.eval_every_epochs and cfg.data.dataset:
            from ..data.spec import parse_data_spec

            spec = parse_data_spec(cfg.data.dataset)
            if not spec.streamed:  # streamed shards are read once per epoch, not again for a monitor
                from ..evaluate.runner import knn_monitor

                monitor = knn_monitor(spec, cfg.data.crop_size)
        result = fit(cfg, resume=args.resume, progress=not args.no_progress, on_epoch_end=monitor, env=env)
    finally:
        cleanup(env)
    if not env.is_main:
        return EXIT_REQUEUE if result.stop_reason == "preempted" else 0
    if cfg.logging.plots and result.stop_reason != "preempted":
        write_run_plots(result.folder, cfg)
    print(
        json.dumps(
            {
                "folder": str(result.folder),
                "steps": result.steps,
                "epochs": result.epochs_completed,
                "last_loss": round(result.last_loss, 6),
                "checkpoint": str(result.checkpoint),
                "seconds": round(result.seconds, 1),
                "stop_reason": result.stop_reason,
                "world_size": result.world_size,
            }
        )
    )
    return EXIT_REQUEUE if result.stop_reason == "preempted" else 0
