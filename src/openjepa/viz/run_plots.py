"""End-of-run plots: training curves, example masks and PCA maps of the target encoder's patch features."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..config import Config
from ..core.checkpoint import list_checkpoints, load_checkpoint
from ..data.build import build_train_dataset
from ..masks.build import build_collator
from ..models.ijepa import IJEPA
from .curves import plot_training_curves
from .masks import plot_masks
from .pca import plot_pca_maps

logger = logging.getLogger("openjepa.viz")


@torch.no_grad()
def write_run_plots(folder: str | Path, cfg: Config, n_images: int = 8) -> list[Path]:
    """Write loss/lr/wd/momentum curves, masks drawn on images and PCA feature maps as PNGs in `folder`."""
    folder = Path(folder)
    out = [plot_training_curves(folder / "metrics.csv", folder / "curves.png")]
    found = list_checkpoints(folder)
    if not found:
        return out
    state = load_checkpoint(found[-1][1])
    model = IJEPA.from_arch(state["arch"])
    model.target_encoder.load_state_dict(state["target_encoder"])
    model.eval()
    dataset = build_train_dataset(cfg)
    collator = build_collator(cfg)
    collator.set_epoch(0)
    imgs, masks_enc, masks_pred = collator([dataset[i] for i in range(min(n_images, len(dataset)))])
    imgs = imgs[0]
    grid = model.encoder.grid_size
    out.append(plot_masks(imgs, masks_enc, masks_pred, grid, folder / "masks.png", max_images=n_images))
    feats = model.target_encoder(imgs)
    out.append(plot_pca_maps(imgs, feats, grid, folder / "pca.png", max_images=n_images))
    logger.info("plots written: %s", ", ".join(p.name for p in out))
    return out
