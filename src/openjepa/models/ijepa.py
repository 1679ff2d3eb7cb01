"""The three I-JEPA networks together: context encoder, predictor and EMA target encoder."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..masks.ops import apply_masks, repeat_interleave_batch
from .registry import create_encoder, create_predictor
from .regularizers import averaged_targets, sigreg, variance_covariance
from .vision_transformer import VisionTransformer, VisionTransformerPredictor, block_parts, mlp_width

TARGET_TYPES = ("representation", "pixels")
TARGET_FROM = ("output", "input")
LOSSES = ("smooth_l1", "mse")


def patchify(imgs: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, patch_size**2 * C), row-major patches (the pixel-target ablation)."""
    b, c, h, w = imgs.shape
    p = patch_size
    x = imgs.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def ijepa_loss(predictions: torch.Tensor, targets: torch.Tensor, kind: str = "smooth_l1") -> torch.Tensor:
    """Smooth-L1 (beta 1, what the reference trains with) or MSE (what the paper writes), element mean."""
    if kind == "smooth_l1":
        return F.smooth_l1_loss(predictions, targets)
    if kind == "mse":
        return F.mse_loss(predictions, targets)
    raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")


def set_fast_paths(model: IJEPA, enabled: bool) -> IJEPA:
    """Every exact fast path on (the default) or the plain eager arrangement (for baselines).

    Off means: explicit softmax(QK^T)V attention instead of SDPA, one predictor call per target
    block, the predictor computing every token in every block, and gradient-free CPU encoder
    forwards in one pass instead of cache-sized chunks. Results agree to float rounding.
    """
    from .vision_transformer import set_fused_attn

    set_fused_attn(model, enabled)
    model.predictor_per_block = not enabled
    model.predictor.fast_path = enabled
    for enc in (model.encoder, model.target_encoder):
        if hasattr(enc, "cpu_chunk_bytes"):
            enc.cpu_chunk_bytes = (10 << 20) if enabled else None
    return model


class IJEPA(nn.Module):
    """Context encoder + predictor (trained) and target encoder (EMA of the context encoder, frozen)."""

    reg_scale: torch.Tensor  # () buffer: the regulariser schedule's multiplier (set_reg_scale)

    def __init__(
        self,
        encoder: VisionTransformer,
        predictor: VisionTransformerPredictor,
        target_encoder: VisionTransformer | None = None,
        target_type: str = "representation",
        target_from: str = "output",
        loss: str = "smooth_l1",
        target_layers: int = 1,
        var_weight: float = 0.0,
        cov_weight: float = 0.0,
        sigreg_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if target_type not in TARGET_TYPES:
            raise ValueError(f"target_type must be one of {TARGET_TYPES}, got {target_type!r}")
        if target_from not in TARGET_FROM:
            raise ValueError(f"target_from must be one of {TARGET_FROM}, got {target_from!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if not 1 <= target_layers <= len(encoder.blocks):
            raise ValueError(
                f"target_layers must be between 1 and the encoder depth {len(encoder.blocks)}, got {target_layers}"
            )
        if min(var_weight, cov_weight, sigreg_weight) < 0:
            raise ValueError(
                "var_weight, cov_weight and sigreg_weight must be >= 0, "
                f"got {var_weight}, {cov_weight} and {sigreg_weight}"
            )
        self.encoder = encoder
        self.predictor = predictor
        # Made before any DDP wrapping, as in the reference: both encoders start identical.
        self.target_encoder = target_encoder if target_encoder is not None else copy.deepcopy(encoder)
        for p in self.target_encoder.parameters():
            p.requires_grad_(False)
        self.target_type = target_type
        self.target_from = target_from
        self.loss_type = loss
        self.target_layers = target_layers
        self.var_weight, self.cov_weight, self.sigreg_weight = var_weight, cov_weight, sigreg_weight
        # The regulariser schedule's multiplier on those weights (train/schedules.py). A buffer, not a
        # float attribute, so a compiled forward reads it without recompiling; not saved (the
        # schedule recomputes it from the step on resume).
        self.register_buffer("reg_scale", torch.ones(()), persistent=False)
        # The plain reference-style arrangement (one predictor call per target block) for
        # baselines; the default batches every block into one call (same outputs, fewer passes).
        self.predictor_per_block = False

    @classmethod
    def build(
        cls,
        model_name: str,
        patch_size: int,
        img_size: int,
        pred_depth: int = 12,
        pred_emb_dim: int = 384,
        predictor_heads: int | None = None,
        init: str = "reference",
        drop_path_rate: float = 0.0,
        target_type: str = "representation",
        target_from: str = "output",
        loss: str = "smooth_l1",
        target_layers: int = 1,
        var_weight: float = 0.0,
        cov_weight: float = 0.0,
        sigreg_weight: float = 0.0,
        **encoder_kwargs,
    ) -> IJEPA:
        """Build the three networks from a preset name, as the reference's `init_model` does."""
        encoder = create_encoder(
            model_name,
            patch_size=patch_size,
            img_size=img_size,
            init=init,
            drop_path_rate=drop_path_rate,
            **encoder_kwargs,
        )
        out_dim = patch_size * patch_size * 3 if target_type == "pixels" else None
        predictor = create_predictor(
            encoder,
            predictor_embed_dim=pred_emb_dim,
            depth=pred_depth,
            num_heads=predictor_heads,
            init=init,
            out_dim=out_dim,
        )
        return cls(
            encoder,
            predictor,
            target_type=target_type,
            target_from=target_from,
            loss=loss,
            target_layers=target_layers,
            var_weight=var_weight,
            cov_weight=cov_weight,
            sigreg_weight=sigreg_weight,
        )

    def arch(self) -> dict:
        """Plain-dict description of the architecture, stored in checkpoints to rebuild it exactly."""
        enc, pred = self.encoder, self.predictor
        # The small-scale objective options are written only when set, so checkpoints (and
        # their architecture checks) from before they existed stay valid.
        options = {
            "target_layers": self.target_layers,
            "var_weight": self.var_weight,
            "cov_weight": self.cov_weight,
            "sigreg_weight": self.sigreg_weight,
        }
        defaults = {"target_layers": 1, "var_weight": 0.0, "cov_weight": 0.0, "sigreg_weight": 0.0}
        return {
            "patch_size": enc.patch_size,
            "img_size": list(enc.img_size),
            "embed_dim": enc.embed_dim,
            "depth": enc.depth,
            "num_heads": enc.num_heads,
            "mlp_ratio": mlp_width(enc.blocks[0]) / enc.embed_dim,
            "pred_depth": len(pred.predictor_blocks),
            "pred_emb_dim": pred.predictor_embed_dim,
            "predictor_heads": block_parts(pred.predictor_blocks[0])[0].num_heads,
            "target_type": self.target_type,
            "target_from": self.target_from,
            "loss": self.loss_type,
            **{k: v for k, v in options.items() if v != defaults[k]},
        }

    @classmethod
    def from_arch(cls, arch: dict) -> IJEPA:
        """Rebuild the networks (random weights) from `arch()`'s description."""
        encoder = VisionTransformer(
            img_size=arch["img_size"],
            patch_size=arch["patch_size"],
            embed_dim=arch["embed_dim"],
            depth=arch["depth"],
            num_heads=arch["num_heads"],
            mlp_ratio=arch["mlp_ratio"],
        )
        out_dim = arch["patch_size"] ** 2 * 3 if arch.get("target_type") == "pixels" else None
        predictor = create_predictor(
            encoder,
            predictor_embed_dim=arch["pred_emb_dim"],
            depth=arch["pred_depth"],
            num_heads=arch["predictor_heads"],
            out_dim=out_dim,
        )
        return cls(
            encoder,
            predictor,
            target_type=arch.get("target_type", "representation"),
            target_from=arch.get("target_from", "output"),
            loss=arch.get("loss", "smooth_l1"),
            target_layers=arch.get("target_layers", 1),
            var_weight=arch.get("var_weight", 0.0),
            cov_weight=arch.get("cov_weight", 0.0),
            sigreg_weight=arch.get("sigreg_weight", 0.0),
        )

    @torch.no_grad()
    def set_reg_scale(self, scale: float) -> None:
        """Set the multiplier on the anti-collapse weights for the next steps (1.0 = as configured)."""
        self.reg_scale.fill_(scale)

    @torch.no_grad()
    def targets(
        self, imgs: torch.Tensor, masks_enc: list[torch.Tensor], masks_pred: list[torch.Tensor]
    ) -> torch.Tensor:
        """Targets (npred * nenc * B, Kp, D): layer-normed target-encoder features at the target blocks."""
        batch = len(imgs)
        if self.target_type == "pixels":
            h = patchify(imgs, self.encoder.patch_size)
            # Per-patch normalised pixels, as in MAE's best pixel-target setting.
            h = F.layer_norm(h, (h.size(-1),))
            h = apply_masks(h, masks_pred)
        elif self.target_from == "input":
            # Ablation (paper Table 11): the target encoder sees only each target block.
            h = self.target_encoder(imgs, masks_pred)
            h = F.layer_norm(h, (h.size(-1),))
        elif self.target_layers > 1:
            layers = self.target_encoder.get_intermediate_layers(imgs, self.target_layers)  # k x (B, N, D)
            h = apply_masks(averaged_targets(layers), masks_pred)  # (npred * B, Kp, D)
        else:
            h = self.target_encoder(imgs)  # (B, N, D), includes the encoder's own final LayerNorm
            h = F.layer_norm(h, (h.size(-1),))  # the reference's second, parameter-free norm
            h = apply_masks(h, masks_pred)  # (npred * B, Kp, D)
        return repeat_interleave_batch(h, batch, repeat=len(masks_enc))

    def predict(
        self, imgs: torch.Tensor, masks_enc: list[torch.Tensor], masks_pred: list[torch.Tensor]
    ) -> torch.Tensor:
        """Predictions (npred * nenc * B, Kp, D) from the context blocks."""
        return self._predict_from(self.encoder(imgs, masks_enc), masks_enc, masks_pred)

    def _predict_from(
        self, z: torch.Tensor, masks_enc: list[torch.Tensor], masks_pred: list[torch.Tensor]
    ) -> torch.Tensor:
        """Predictions from the context encoder's (nenc * B, Kc, D) tokens `z`."""
        if self.predictor_per_block:
            # Mask-major row order, like the batched call: block j's rows are the j-th chunk.
            return torch.cat([self.predictor(z, masks_enc, [m]) for m in masks_pred], dim=0)
        return self.predictor(z, masks_enc, masks_pred)

    def forward(
        self, imgs: torch.Tensor, masks_enc: list[torch.Tensor], masks_pred: list[torch.Tensor]
    ) -> torch.Tensor:
        """The I-JEPA loss for one batch."""
        targets = self.targets(imgs, masks_enc, masks_pred)
        z = self.encoder(imgs, masks_enc)  # (nenc * B, Kc, D)
        predictions = self._predict_from(z, masks_enc, masks_pred)
        loss = ijepa_loss(predictions, targets.to(predictions.dtype), self.loss_type)
        if self.var_weight or self.cov_weight or self.sigreg_weight:
            means = z.mean(dim=1)  # per-image context means (nenc * B, D)
            if self.var_weight or self.cov_weight:
                variance, covariance = variance_covariance(means)
                # at scale 1 the same products in the same order as before the schedule: bitwise equal
                scale = self.reg_scale
                loss = loss + (scale * self.var_weight) * variance + (scale * self.cov_weight) * covariance
            if self.sigreg_weight:
                loss = loss + (self.reg_scale * self.sigreg_weight) * sigreg(means)
        return loss
