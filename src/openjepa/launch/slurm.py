"""SLURM: write an `sbatch` script for a run and submit it; requeue on pre-emption resumes.

The script starts one task per GPU with `srun` (each task reads its rank from SLURM_PROCID, see
`openjepa.core.distributed.process_layout`), always passes `--resume` (a fresh run starts at step 0, a
requeued one continues from its newest good checkpoint), and asks SLURM for SIGUSR1 a few minutes
before the time limit (`--signal=USR1@SECONDS`). On SIGUSR1 or SIGTERM the training loop finishes
its step, rank 0 writes a checkpoint, every rank exits with status 75 (EXIT_REQUEUE), and the
script then requeues the job with `scontrol requeue`. A pre-emption (SIGTERM, then SIGKILL after
the partition's GraceTime) is requeued by SLURM itself thanks to `--requeue`.

Only `submit` runs a SLURM command; writing and testing a script needs no SLURM.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config, save_config

EXIT_REQUEUE = 75  # keep equal to openjepa.train.loop.EXIT_REQUEUE (not imported: that pulls in torch)


@dataclass
class SlurmOptions:
    """What the `#SBATCH` header asks for, and how the tasks are started."""

    nodes: int = 1
    gpus_per_node: int = 8
    cpus_per_gpu: int = 10  # data.num_workers + 1 is a good value
    time: str = "72:00:00"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    mem: str | None = None  # e.g. "0" (all of each node's memory) or "480G"
    constraint: str | None = None
    job_name: str = "openjepa"
    signal_seconds: int = 300  # SIGUSR1 this long before the time limit: time to finish a step and checkpoint
    python: str = field(default_factory=lambda: sys.executable)
    setup: list[str] = field(default_factory=list)  # shell lines run before srun (module load, activate, ...)
    extra: list[str] = field(default_factory=list)  # more #SBATCH options, e.g. "--exclusive"

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.gpus_per_node < 1 or self.cpus_per_gpu < 1:
            raise ValueError(
                f"nodes, gpus_per_node and cpus_per_gpu must be >= 1, got {self.nodes}, "
                f"{self.gpus_per_node}, {self.cpus_per_gpu}"
            )
        if self.signal_seconds < 0:
            raise ValueError(f"signal_seconds must be >= 0, got {self.signal_seconds}")

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node


def render_sbatch(opts: SlurmOptions, config_path: str | Path, folder: str | Path) -> str:
    """The text of the sbatch script that trains `config_path`, logging to `folder`/slurm/.

    Paths are written as given (relative ones are relative to the directory `sbatch` runs in).
    """
    folder = Path(folder)
    header = [
        f"--job-name={opts.job_name}",
        f"--nodes={opts.nodes}",
        f"--ntasks-per-node={opts.gpus_per_node}",
        f"--gpus-per-node={opts.gpus_per_node}",
        f"--cpus-per-task={opts.cpus_per_gpu}",
        f"--time={opts.time}",
        f"--output={folder / 'slurm' / '%x-%j.out'}",
        "--open-mode=append",
        "--requeue",
        f"--signal=USR1@{opts.signal_seconds}",
    ]
    for key, value in (
        ("partition", opts.partition),
        ("account", opts.account),
        ("qos", opts.qos),
        ("mem", opts.mem),
        ("constraint", opts.constraint),
    ):
        if value:
            header.append(f"--{key}={value}")
    header += list(opts.extra)
    cmd = [
        opts.python,
        "-m",
        "openjepa.cli.main",
        "pretrain",
        "--config",
        str(config_path),
        "--resume",
        "--no-progress",
    ]
    lines = [
        "#!/bin/bash",
        "# Written by `openjepa pretrain --slurm`. Submit (again) with: sbatch THIS_FILE",
        f"# {opts.nodes} node(s) x {opts.gpus_per_node} GPU(s): one task per GPU, {opts.world_size} processes.",
        *[f"#SBATCH {h}" for h in header],
        "",
        "set -u",
        "# rendezvous: rank 0 listens on the first node of the allocation",
        'export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
        'export MASTER_PORT="$((15000 + SLURM_JOB_ID % 20000))"',
        'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"',
        *opts.setup,
        'echo "openjepa: job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on $SLURM_JOB_NODELIST, '
        'master $MASTER_ADDR:$MASTER_PORT"',
        "",
        "# --resume: a fresh run starts at step 0, a requeued one continues from its newest good checkpoint",
        "srun " + " ".join(shlex.quote(c) for c in cmd),
        "rc=$?",
        f'if [ "$rc" -eq {EXIT_REQUEUE} ]; then',
        '    echo "openjepa: stopped by a signal after writing a checkpoint; requeueing job $SLURM_JOB_ID"',
        '    scontrol requeue "$SLURM_JOB_ID"',
        "    exit 0",
        "fi",
        'exit "$rc"',
        "",
    ]
    return "\n".join(lines)


def write_job(cfg: Config, opts: SlurmOptions, folder: str | Path | None = None) -> Path:
    """Write `{logging.folder}/slurm/config.yaml` (the resolved config) and `.../pretrain.sbatch`."""
    folder = Path(folder or cfg.logging.folder).resolve()
    slurm_dir = folder / "slurm"
    slurm_dir.mkdir(parents=True, exist_ok=True)
    config_path = slurm_dir / "config.yaml"
    save_config(cfg, config_path)
    script = slurm_dir / "pretrain.sbatch"
    script.write_text(render_sbatch(opts, config_path, folder))
    script.chmod(0o755)
    return script


def submit(script: str | Path, sbatch: str = "sbatch") -> str:
    """Submit with `sbatch --parsable`; returns the job id. Needs SLURM (raises on a plain machine)."""
    exe = shutil.which(sbatch)
    if exe is None:
        raise FileNotFoundError(
            f"`{sbatch}` not found: this machine is not a SLURM login node. The script is "
            f"written: copy it to the cluster and run `sbatch {script}`"
        )
    out = subprocess.run([exe, "--parsable", str(script)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise OSError(f"sbatch failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout.strip().split(";")[0]
