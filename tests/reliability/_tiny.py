"""Tiny configurations and helpers shared by the reliability tests and their child processes.

Kept free of pytest so that `_child.py` can import it in a plain subprocess.
"""

from __future__ import annotations

import contextlib
import csv
from pathlib import Path

import torch

from openjepa.config import load_config
from openjepa.core.checkpoint import list_checkpoints, load_checkpoint

# 24 shapes images, batch 4: 6 steps per epoch, 12 steps for the default two epochs.
TINY = [
    "meta.model_name=vit_tiny",
    "meta.depth=1",
    "meta.pred_depth=1",
    "meta.pred_emb_dim=48",
    "meta.use_bfloat16=false",
    "meta.device=cpu",
    "data.crop_size=32",
    "data.batch_size=4",
    "data.num_workers=0",
    "mask.patch_size=4",
    "mask.min_keep=4",
    "mask.pred_mask_scale=[0.15,0.2]",
    "optimization.epochs=2",
    "optimization.warmup=1",
    "logging.log_freq=2",
    "logging.tensorboard=false",
    "logging.plots=false",
    "logging.collapse_every_steps=0",
    "logging.checkpoint_every_steps=2",
]
STEPS_PER_EPOCH = 6
TOTAL_STEPS = 12


def tiny_cfg(folder, *more: str):
    """The tiny run configuration writing to `folder` (more dotted overrides appended)."""
    return load_config(None, TINY + ["data.dataset=shapes:24", f"logging.folder={folder}", *more])


def params(folder_or_ckpt) -> dict[str, torch.Tensor]:
    """Every network tensor of a run's newest checkpoint (or of one checkpoint file)."""
    p = Path(folder_or_ckpt)
    path = list_checkpoints(p)[-1][1] if p.is_dir() else p
    state = load_checkpoint(path)
    return {f"{part}.{k}": v for part in ("encoder", "predictor", "target_encoder") for k, v in state[part].items()}


def same_params(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """Names of the tensors that differ (bitwise); empty when the two are identical."""
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


def losses(folder) -> list[tuple[int, str]]:
    """(step, loss as written) of metrics.csv, in file order."""
    with open(Path(folder) / "metrics.csv") as f:
        return [(int(r["step"]), r["loss"]) for r in csv.DictReader(f) if r["loss"]]


@contextlib.contextmanager
def one_thread():
    """Run torch single-threaded: exact results, and no spinning threads on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
