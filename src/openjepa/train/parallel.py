"""Data parallelism for the three I-JEPA networks: DDP (default) or FSDP2, plus activation checkpointing.

* DDP wraps the whole IJEPA module; the target encoder has no gradients, so only the context
  encoder and the predictor take part in the all-reduce.
* FSDP2 (`torch.distributed.fsdp.fully_shard`) shards every transformer block, then each network,
  then the IJEPA root, over one flat mesh of all processes. The context and target encoders are
  sharded the same way, so their local shards line up element for element and the EMA update is
  a local operation on the shards (`ema_update_sharded_`), with no communication.
* Checkpoints always hold full (unsharded) tensors: `full_state_dicts` gathers them (a collective:
  every rank calls it; rank 0 gets the tensors), so a run trained with FSDP loads in one process.

Nothing here needs a GPU: on CPU the process group is gloo and the mesh a CPU mesh.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn as nn
import torch.utils.checkpoint
from torch.nn.parallel import DistributedDataParallel

from ..core.distributed import DistEnv
from ..models.ijepa import IJEPA

logger = logging.getLogger("openjepa.train")

__all__ = [
    "enable_activation_checkpointing",
    "wrap_model",
    "apply_fsdp",
    "is_sharded",
    "ema_update_sharded_",
    "full_state_dicts",
    "shard_optimizer_state",
]


# --------------------------------------------------------------------------- activation checkpointing
def _checkpointed(forward):
    def forward_with_recompute(*args: Any, **kwargs: Any):
        if not torch.is_grad_enabled():  # nothing to save for backward (e.g. the target encoder, eval)
            return forward(*args, **kwargs)
        return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return forward_with_recompute


def enable_activation_checkpointing(model: IJEPA) -> int:
    """Recompute the activations of every context-encoder and predictor block in backward.

    Wraps each block's `forward` on the instance: parameter names (and so checkpoints) do not
    change, and FSDP's hooks (which run around `forward`) still gather the block's parameters
    before the recomputation. The target encoder runs without gradients and needs nothing.
    Returns the number of blocks wrapped.
    """
    blocks = list(model.encoder.blocks) + list(model.predictor.predictor_blocks)
    for blk in blocks:
        if not getattr(blk, "_openjepa_checkpointed", False):
            blk.forward = _checkpointed(blk.forward)
            # A plain bool attribute; torch types Module.__setattr__ for tensors and modules only.
            blk._openjepa_checkpointed = True  # type: ignore[assignment]
    return len(blocks)


# --------------------------------------------------------------------------- wrapping
def apply_fsdp(model: IJEPA, env: DistEnv, reshard_after_forward: bool = True) -> IJEPA:
    """Shard the IJEPA networks in place with FSDP2 over all processes; returns the same module.

    Units: each transformer block, then each network (patch embedding, norms, predictor heads),
    then the root. Parameters become DTensors sharded on dim 0; build the optimizer after this.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(env.device.type, (env.world_size,))
    for net, blocks in (
        (model.encoder, model.encoder.blocks),
        (model.target_encoder, model.target_encoder.blocks),
        (model.predictor, model.predictor.predictor_blocks),
    ):
        for blk in blocks:
            fully_shard(blk, mesh=mesh, reshard_after_forward=reshard_after_forward)
        fully_shard(net, mesh=mesh, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard_after_forward)
    return model


def wrap_model(model: IJEPA, env: DistEnv, fsdp: bool = False) -> nn.Module:
    """The module `train_step` runs: FSDP2-sharded IJEPA, DDP(IJEPA), or the IJEPA itself (one process)."""
    if fsdp and env.distributed:
        return apply_fsdp(model, env)
    if fsdp:
        logger.info("meta.fsdp is set but only one process runs; training unsharded")
    if env.distributed:
        return DistributedDataParallel(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    return model


def is_sharded(model: nn.Module) -> bool:
    """True once `apply_fsdp` sharded the module."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _local(p: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return p.to_local() if isinstance(p, DTensor) else p.data


# --------------------------------------------------------------------------- EMA on shards
@torch.no_grad()
def ema_update_sharded_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- m * target + (1 - m) * online on each rank's local shards (no communication).

    Both encoders are sharded identically (same shapes, same mesh, Shard(0)), so local shard k of a
    target tensor holds the same elements as local shard k of its online twin. The arithmetic is
    that of `ema_update_` (a test checks they agree bitwise), so an FSDP run's EMA equals an
    unsharded run's.
    """
    t_params, o_params = list(target.parameters()), list(online.parameters())
    if len(t_params) != len(o_params):
        raise ValueError("target and online encoders have different parameter lists")
    t_local, o_local = [], []
    for t, o in zip(t_params, o_params):
        if tuple(t.shape) != tuple(o.shape) or getattr(t, "placements", None) != getattr(o, "placements", None):
            raise ValueError(
                f"target and online parameters are sharded differently: {tuple(t.shape)} "
                f"{getattr(t, 'placements', None)} vs {tuple(o.shape)} {getattr(o, 'placements', None)}"
            )
        lt, lo = _local(t), _local(o)
        if lt.numel():  # a rank may hold an empty shard of a small tensor
            t_local.append(lt)
            o_local.append(lo)
    if t_local:
        torch._foreach_mul_(t_local, momentum)  # the reference's mul_(m).add_((1 - m) * q), as ema_update_
        torch._foreach_add_(t_local, torch._foreach_mul(o_local, 1.0 - momentum))


# --------------------------------------------------------------------------- full state dicts
def _full(value: Any, keep: bool) -> Any:
    from torch.distributed.tensor import DTensor

    if isinstance(value, DTensor):
        full = value.full_tensor()  # collective
        return full.detach().cpu() if keep else None
    if isinstance(value, dict):
        return {k: _full(v, keep) for k, v in value.items()}
    if isinstance(value, list):
        return [_full(v, keep) for v in value]
    return value


def full_state_dicts(model: IJEPA, optimizer: torch.optim.Optimizer, env: DistEnv) -> dict | None:
    """encoder / predictor / target_encoder / optimizer state dicts with full tensors, on rank 0.

    Unsharded models: the plain state dicts (only rank 0 builds them). Sharded (FSDP2) models:
    every rank must call this, each DTensor is all-gathered one at a time (peak extra memory: one
    full tensor) and rank 0 keeps CPU copies; other ranks get None. The optimizer state keeps
    torch's index layout, so it loads into a plain AdamW over the reference's parameter groups.
    """
    sharded = is_sharded(model)
    if not sharded:
        if not env.is_main:
            return None
        return {
            "encoder": model.encoder.state_dict(),
            "predictor": model.predictor.state_dict(),
            "target_encoder": model.target_encoder.state_dict(),
            "optimizer": optimizer.state_dict(),
        }
    keep = env.is_main
    out = {part: _full(getattr(model, part).state_dict(), keep) for part in ("encoder", "predictor", "target_encoder")}
    out["optimizer"] = _full(optimizer.state_dict(), keep)
    return out if keep else None


def shard_optimizer_state(state: dict, optimizer: torch.optim.Optimizer) -> dict:
    """A full optimizer state dict (from a checkpoint) with each tensor cut to this rank's shard.

    Every rank loads the same file, so each takes its own chunk locally (`src_data_rank=None`: no
    communication). Tensors shaped like their parameter (AdamW's moments) are sharded; scalars
    (the step count) are kept.
    """
    from torch.distributed.tensor import DTensor, distribute_tensor

    params = [p for g in optimizer.param_groups for p in g["params"]]
    out = {"param_groups": state["param_groups"], "state": {}}
    for idx, st in state["state"].items():
        p = params[int(idx)]
        if isinstance(p, DTensor):
            st = {
                k: distribute_tensor(v.to(p.device), p.device_mesh, p.placements, src_data_rank=None)
                if torch.is_tensor(v) and tuple(v.shape) == tuple(p.shape)
                else v
                for k, v in st.items()
            }
        out["state"][idx] = st
    return out
