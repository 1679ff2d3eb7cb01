"""torch.distributed set-up from the standard torchrun / SLURM environment, with a single-process fallback.

The only module that reads the launcher's environment variables. Nothing here needs SLURM: its
variables are read when present and ignored otherwise.
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: rank, world size, local rank and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on the process that logs, checkpoints and plots."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group with more than one rank is running."""
        return self.world_size > 1


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """'auto' picks cuda:<local_rank> when available, else mps, else cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"meta.device={name} but no CUDA device is available; use meta.device=cpu or auto")
    return dev


def _env_int(environ: Mapping[str, str], *names: str) -> int | None:
    for n in names:
        if environ.get(n, "").strip():
            return int(environ[n])
    return None


def process_layout(environ: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's variables, else from an `srun` job step's.

    torchrun (single or multi-node, any rendezvous) sets RANK / WORLD_SIZE / LOCAL_RANK. Under
    `srun` without torchrun each task reads SLURM_PROCID / SLURM_STEP_NUM_TASKS / SLURM_LOCALID.
    SLURM_NTASKS alone is not trusted: it is also set in the batch script and in an `salloc`
    shell, where a plain `python` is one process, not a job step of several.
    """
    environ = os.environ if environ is None else environ
    if _env_int(environ, "WORLD_SIZE") is not None:
        return (
            _env_int(environ, "RANK") or 0,
            _env_int(environ, "WORLD_SIZE") or 1,
            _env_int(environ, "LOCAL_RANK") or 0,
        )
    if _env_int(environ, "SLURM_STEP_NUM_TASKS") is not None and _env_int(environ, "SLURM_PROCID") is not None:
        return (
            _env_int(environ, "SLURM_PROCID") or 0,
            _env_int(environ, "SLURM_STEP_NUM_TASKS") or 1,
            _env_int(environ, "SLURM_LOCALID") or 0,
        )
    return 0, 1, 0


def _slurm_rendezvous() -> None:
    """Under `srun` without torchrun: MASTER_ADDR = the job's first node, MASTER_PORT from the job id."""
    if "MASTER_ADDR" not in os.environ and os.environ.get("SLURM_JOB_NODELIST") and shutil.which("scontrol"):
        out = subprocess.run(
            ["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        if out:
            os.environ["MASTER_ADDR"] = out[0]
    if "MASTER_ADDR" in os.environ and "MASTER_PORT" not in os.environ and "SLURM_JOB_ID" in os.environ:
        os.environ["MASTER_PORT"] = str(15000 + int(os.environ["SLURM_JOB_ID"]) % 20000)


def init_distributed(device: str = "auto", backend: str | None = None, timeout_minutes: float | None = None) -> DistEnv:
    """Join the process group described by torchrun (or srun) variables; single process otherwise.

    The backend is NCCL on CUDA devices and gloo on CPU unless `backend` names another.
    """
    rank, world, local_rank = process_layout()
    dev = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if "SLURM_PROCID" in os.environ and "RANK" not in os.environ:
            _slurm_rendezvous()
        if "MASTER_ADDR" not in os.environ:
            raise RuntimeError(
                "WORLD_SIZE > 1 but MASTER_ADDR is not set; launch with torchrun "
                "(it sets the rendezvous variables) or export MASTER_ADDR/MASTER_PORT"
            )
        os.environ.setdefault("MASTER_PORT", "29500")
        kwargs: dict = {}
        if timeout_minutes is not None:
            kwargs["timeout"] = datetime.timedelta(minutes=timeout_minutes)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
            kwargs["device_id"] = dev  # binds NCCL to this GPU up front (no guessing at the first collective)
        dist.init_process_group(
            backend=backend or ("nccl" if dev.type == "cuda" else "gloo"),
            init_method="env://",
            rank=rank,
            world_size=world,
            **kwargs,
        )
    elif dist.is_initialized():  # a caller (a test, a notebook) joined the group already
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistEnv(rank, world, local_rank, dev)


def all_reduce_mean(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Mean of a tensor over ranks (identity on one process)."""
    if not env.distributed:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / env.world_size


def barrier(env: DistEnv) -> None:
    """Wait for every rank (no-op on one process)."""
    if env.distributed:
        dist.barrier()


def cleanup(env: DistEnv) -> None:
    """Leave the process group if this process joined one."""
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def max_over_ranks(value: int, env: DistEnv) -> int:
    """The largest of every rank's `value` (a collective: every rank must call it; waits for the device)."""
    if not env.distributed:
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def any_rank(flag: bool, env: DistEnv) -> bool:
    """True on every rank when `flag` is true on at least one (a collective: every rank must call it)."""
    return bool(max_over_ranks(1 if flag else 0, env))
