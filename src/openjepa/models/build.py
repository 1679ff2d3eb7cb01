"""The I-JEPA networks a config describes."""

from __future__ import annotations

import torch

from ..config import Config
from .ijepa import IJEPA


def build_model(cfg: Config) -> IJEPA:
    """Encoder, predictor and target encoder from the config (seeded, so every rank starts equal)."""
    torch.manual_seed(cfg.meta.seed)
    extra = {"depth": cfg.meta.depth} if cfg.meta.depth else {}
    return IJEPA.build(
        cfg.meta.model_name,
        cfg.mask.patch_size,
        cfg.data.crop_size,
        pred_depth=cfg.meta.pred_depth,
        pred_emb_dim=cfg.meta.pred_emb_dim,
        predictor_heads=cfg.meta.predictor_heads,
        init=cfg.meta.init,
        target_type=cfg.optimization.target,
        target_from=cfg.optimization.target_from,
        loss=cfg.optimization.loss,
        target_layers=cfg.optimization.target_layers,
        var_weight=cfg.optimization.var_weight,
        cov_weight=cfg.optimization.cov_weight,
        sigreg_weight=cfg.optimization.sigreg_weight,
        **extra,
    )
