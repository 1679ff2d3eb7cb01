"""torch.distributed set-up from the standard torchrun / SLURM environment, with a single-process fallback.

The only module that reads the launcher's environment variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

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


def _env_int(*names: str) -> int | None:
    for n in names:
        if n in os.environ:
            return int(os.environ[n])
    return None


def init_distributed(device: str = "auto", backend: str | None = None) -> DistEnv:
    """Join the process group described by torchrun (or SLURM) variables; single process otherwise."""
    world = _env_int("WORLD_SIZE", "SLURM_NTASKS") or 1
    rank = _env_int("RANK", "SLURM_PROCID") or 0
    local_rank = _env_int("LOCAL_RANK", "SLURM_LOCALID") or 0
    dev = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ:
            raise RuntimeError("WORLD_SIZE > 1 but MASTER_ADDR is not set; launch with torchrun "
                               "(it sets the rendezvous variables) or export MASTER_ADDR/MASTER_PORT")
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend or ("nccl" if dev.type == "cuda" else "gloo"),
                                rank=rank, world_size=world)
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
