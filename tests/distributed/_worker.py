"""What each rank of the 2-process gloo tests runs (no pytest here: spawned children import this).

`run_rank` joins the process group, runs the named scenarios in order and saves their results to
`{out}/rank{r}.pt`; the parent (conftest.two_ranks) compares them with single-process runs.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from pathlib import Path

import torch

T0 = time.perf_counter()
B = 4  # per-rank batch of the train_step comparisons (the single process runs 2B)
STEPS = 3
LR, WD, MOMENTUM = 1e-3, 0.04, 0.99


# --------------------------------------------------------------------------- shared with the parent
def tiny_model():
    from openjepa.models.ijepa import IJEPA

    torch.manual_seed(0)
    return IJEPA.build("vit_tiny", 4, 32, pred_depth=2, pred_emb_dim=48, depth=2)


def fixed_batches(n: int = 2 * B, steps: int = STEPS):
    """`steps` batches of n images with multi-block masks drawn for all n (one block size per batch)."""
    from openjepa.masks import MultiBlockMaskCollator

    g = torch.Generator().manual_seed(123)
    collator = MultiBlockMaskCollator(32, 4, (0.85, 1.0), (0.15, 0.2), (0.75, 1.5), 1, 4, 4)
    out = []
    for _ in range(steps):
        imgs = torch.randn(n, 3, 32, 32, generator=g)
        masks_enc, masks_pred = collator.sample(n, g)
        out.append((imgs, masks_enc, masks_pred))
    return out


def rows(batch, lo: int, hi: int):
    imgs, me, mp = batch
    return imgs[lo:hi], [m[lo:hi] for m in me], [m[lo:hi] for m in mp]


def full_params(model) -> dict[str, torch.Tensor]:
    return {
        f"{part}.{k}": v.detach().clone()
        for part in ("encoder", "predictor", "target_encoder")
        for k, v in getattr(model, part).state_dict().items()
    }


def train_steps(net, model, batches_per_step, ema_fn=None):
    """Run train_step over the given micro-batch lists; returns the per-step (rank-averaged) losses."""
    from openjepa.core.distributed import DistEnv, all_reduce_mean
    from openjepa.train import make_optimizer, train_step

    opt = make_optimizer(model.encoder, model.predictor)
    kwargs = {"ema_fn": ema_fn} if ema_fn is not None else {}
    env = (
        DistEnv(torch.distributed.get_rank(), torch.distributed.get_world_size())
        if torch.distributed.is_initialized()
        else DistEnv()
    )
    losses = []
    for micro in batches_per_step:
        r = train_step(net, opt, micro, LR, WD, MOMENTUM, **kwargs)
        losses.append(float(all_reduce_mean(r.loss, env)))
    return losses, opt


# --------------------------------------------------------------------------- scenarios
def ddp(env, out, accum: int = 1):
    from openjepa.train.parallel import wrap_model

    model = tiny_model()
    net = wrap_model(model, env)
    lo = env.rank * B
    step = B // accum
    batches = [[rows(b, lo + i * step, lo + (i + 1) * step) for i in range(accum)] for b in fixed_batches()]
    losses, _ = train_steps(net, model, batches)
    return {"losses": losses, "params": full_params(model), "wrapper": type(net).__name__}


def ddp_accum(env, out):
    return ddp(env, out, accum=2)


def fsdp(env, out):
    from openjepa.core.distributed import DistEnv
    from openjepa.train.parallel import (
        apply_fsdp,
        ema_update_sharded_,
        enable_activation_checkpointing,
        full_state_dicts,
    )

    model = tiny_model()
    enable_activation_checkpointing(model)
    apply_fsdp(model, env)
    lo = env.rank * B
    batches = [[rows(b, lo, lo + B)] for b in fixed_batches()]
    losses, opt = train_steps(model, model, batches, ema_fn=ema_update_sharded_)
    local = next(model.target_encoder.parameters())
    nets = full_state_dicts(model, opt, DistEnv(env.rank, env.world_size))
    params = None
    if nets is not None:
        params = {
            f"{part}.{k}": v for part in ("encoder", "predictor", "target_encoder") for k, v in nets[part].items()
        }
    return {
        "losses": losses,
        "params": params,
        "param_type": type(local).__name__,
        "local_shape": tuple(local.to_local().shape),
        "global_shape": tuple(local.shape),
        "optimizer_keys": sorted(next(iter(nets["optimizer"]["state"].values()))) if nets else None,
        "optimizer_index": sorted(nets["optimizer"]["state"])[:3] if nets else None,
    }


def _tiny_cfg(folder, *more):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))
    import _tiny  # noqa: E402  (tests/reliability/_tiny.py: the tiny run of the reliability tests)

    return _tiny.tiny_cfg(folder, *more)


def _audit_writes(folder: Path) -> list[str]:
    """Record every file this process opens for writing (or renames into) under `folder`."""
    seen: list[str] = []
    root = str(folder)

    def hook(event, args):
        if event == "open" and len(args) >= 3:
            path, mode, flags = args[0], args[1], args[2]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            )
            if writing and isinstance(path, (str, bytes, os.PathLike)) and str(os.fsdecode(path)).startswith(root):
                seen.append(os.path.basename(os.fsdecode(path)))
        elif event in ("os.rename", "os.replace") and str(args[1]).startswith(root):
            seen.append(os.path.basename(str(args[1])))

    sys.addaudithook(hook)
    return seen


def fit_ddp(env, out):
    """An uninterrupted 2-rank run; rank 1 records what it writes."""
    from openjepa.train.loop import fit

    folder = out / "ddp"
    writes = _audit_writes(out) if env.rank == 1 else None
    r = fit(_tiny_cfg(folder), progress=False, env=env)
    return {"steps": r.steps, "stop": r.stop_reason, "rank": r.rank, "writes": sorted(set(writes or []))}


def fit_preempt(env, out):
    """Rank 1 alone gets SIGUSR1 after step 3: both ranks stop at the next check, rank 0 checkpoints;
    then both resume to the end."""
    import openjepa.train.loop as loop

    folder = out / "preempt"
    original, done = loop.train_step, [0]

    def step_then_signal(*args, **kwargs):
        result = original(*args, **kwargs)
        done[0] += 1
        if done[0] == 3 and env.rank == 1:
            os.kill(os.getpid(), signal.SIGUSR1)
        return result

    loop.train_step = step_then_signal
    try:
        first = loop.fit(_tiny_cfg(folder), progress=False, env=env)
    finally:
        loop.train_step = original
    second = loop.fit(_tiny_cfg(folder), resume=True, progress=False, env=env)
    return {"first": (first.steps, first.stop_reason), "second": (second.steps, second.stop_reason)}


def fit_fsdp(env, out):
    """FSDP2 + activation checkpointing: stopped at step 2, resumed (sharding the saved optimizer state)."""
    from openjepa.train.loop import fit

    folder = out / "fsdp"
    extra = ("meta.fsdp=true", "meta.activation_checkpointing=true", "logging.collapse_every_steps=2")
    first = fit(_tiny_cfg(folder, *extra, "optimization.max_steps=2"), progress=False, env=env)
    second = fit(_tiny_cfg(folder, *extra), resume=True, progress=False, env=env)
    return {"first": (first.steps, first.stop_reason), "second": (second.steps, second.stop_reason)}


def fit_shards(env, out):
    """Streaming tar shards (written by the parent) with 2 loader workers per rank."""
    from openjepa.train.loop import fit

    spec = f"shards:{out / 'shards'}/shard-{{000000..000003}}.tar"
    r = fit(
        _tiny_cfg(out / "shards_run", f"data.dataset={spec}", "data.num_workers=2", "optimization.epochs=1"),
        progress=False,
        env=env,
    )
    return {"steps": r.steps, "stop": r.stop_reason}


SCENARIOS = {f.__name__: f for f in (ddp, ddp_accum, fsdp, fit_ddp, fit_preempt, fit_fsdp, fit_shards)}


def run_rank(rank: int, world: int, port: int, out: str, scenarios: list[str]) -> None:
    """Entry point of each spawned rank."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    # spawned children inherit "spawn" for their own children; torchrun's workers fork their DataLoader
    # workers (the Linux default), which is also what keeps the shard test's workers cheap to start
    import multiprocessing

    multiprocessing.set_start_method("fork", force=True)
    from openjepa.core.distributed import cleanup, init_distributed

    env = init_distributed("cpu", timeout_minutes=2)
    out_dir = Path(out)
    results: dict = {}
    results["seconds"] = {"start": time.perf_counter() - T0}
    for name in scenarios:
        t = time.perf_counter()
        try:
            results[name] = SCENARIOS[name](env, out_dir)
            results["seconds"][name] = time.perf_counter() - t
        except Exception:  # the other rank may now wait in a collective: stop here, report it
            results[name] = {"error": traceback.format_exc()}
            torch.save(results, out_dir / f"rank{rank}.pt")
            os._exit(1)
        torch.save(results, out_dir / f"rank{rank}.pt")
    cleanup(env)
