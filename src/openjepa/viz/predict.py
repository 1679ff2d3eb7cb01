"""What the predictor 'imagines' behind the mask (the paper's Figure 6), decoded to pixels.

The paper decodes predictor outputs with a generative RCDM model. Here the decoder is lighter and
deterministic: a per-patch MLP (LayerNorm -> Linear -> GELU -> Linear) trained by MSE to map one
frozen target-encoder patch feature (layer-normed, exactly as the predictor's targets are) to that
patch's normalised pixels. It is trained on target features only, then applied unchanged to the
predictor's outputs at the masked blocks. Being deterministic and per-patch it shows the *mean*
image a feature stands for (blurry where the feature is uncertain), not a sample.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.ijepa import IJEPA, patchify

logger = logging.getLogger(__name__)


class PatchDecoder(nn.Module):
    """Per-patch MLP decoder: (..., D) feature -> (..., p*p*3) normalised pixels of that patch."""

    def __init__(self, dim: int, patch_size: int, hidden: int = 512) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.net = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, patch_size * patch_size * 3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Decode features to flattened (row-major, channel-last) patch pixels."""
        return self.net(x)


def unpatchify(patches: torch.Tensor, patch_size: int, grid: tuple[int, int]) -> torch.Tensor:
    """(B, N, p*p*3) -> (B, 3, H, W): the inverse of `patchify`."""
    b, p = len(patches), patch_size
    gh, gw = grid
    x = patches.reshape(b, gh, gw, p, p, 3).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, 3, gh * p, gw * p)


def load_ijepa(checkpoint: str | Path, device: str | torch.device = "cpu") -> tuple[IJEPA, Path]:
    """The full model (encoder, predictor, target encoder) of an openjepa checkpoint or run folder."""
    from ..core.checkpoint import CheckpointError, find_resumable, load_checkpoint

    path = Path(checkpoint)
    if path.is_dir():
        found = find_resumable(path)
        if found is None:
            raise CheckpointError(
                f"{path} holds no openjepa checkpoint (ckpt-step*.pt); pass a checkpoint file "
                f"or the folder of a pretraining run"
            )
        path, state = found
    else:
        state = load_checkpoint(path)
    if "predictor" not in state or "arch" not in state:
        raise CheckpointError(
            f"{path} has no predictor weights; `viz predict` needs a training checkpoint "
            f"(ckpt-step*.pt from `openjepa pretrain`), not an exported encoder"
        )
    model = IJEPA.from_arch(state["arch"])
    model.encoder.load_state_dict(state["encoder"])
    model.predictor.load_state_dict(state["predictor"])
    model.target_encoder.load_state_dict(state["target_encoder"])
    return model.to(device).eval(), path


@torch.no_grad()
def target_features(model: IJEPA, imgs: torch.Tensor) -> torch.Tensor:
    """(B, N, D) layer-normed target-encoder features of every patch: what the predictor learns to predict."""
    h = model.target_encoder(imgs)
    return F.layer_norm(h, (h.size(-1),))


def train_decoder(
    model: IJEPA,
    images: torch.Tensor,
    *,
    steps: int = 1500,
    batch_tokens: int = 4096,
    lr: float = 2e-3,
    hidden: int = 512,
    val_fraction: float = 0.1,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
) -> tuple[PatchDecoder, dict[str, float]]:
    """Fit a PatchDecoder on (target feature, patch pixels) pairs of `images`; returns it and its held-out MSE."""
    from tqdm.auto import tqdm

    p = model.encoder.patch_size
    device = next(model.parameters()).device
    feats, pix = [], []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device)
        feats.append(target_features(model, x).flatten(0, 1).cpu())
        pix.append(patchify(x, p).flatten(0, 1).cpu())
    f, y = torch.cat(feats), torch.cat(pix)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(f), generator=g)
    n_val = max(1, int(val_fraction * len(f)))
    val, tr = perm[:n_val], perm[n_val:]
    torch.manual_seed(seed)
    decoder = PatchDecoder(f.shape[1], p, hidden).to(device)
    opt = torch.optim.AdamW(decoder.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    for _ in tqdm(range(steps), desc="decoder", disable=not progress):
        idx = tr[torch.randint(len(tr), (batch_tokens,), generator=g)]
        loss = F.mse_loss(decoder(f[idx].to(device)), y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    decoder.eval()
    with torch.no_grad():
        val_mse = float(F.mse_loss(decoder(f[val].to(device)), y[val].to(device)))
    # The pixel variance sets the scale: an MSE of 1.0 x variance is a decoder that outputs the mean.
    return decoder, {"decoder_val_mse": val_mse, "pixel_var": float(y[val].var()), "train_tokens": len(tr)}


@dataclass
class PredictionGrid:
    """What `predict_grid` wrote and measured."""

    path: Path
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def _paint(canvas: torch.Tensor, patches: torch.Tensor, idx: torch.Tensor, p: int, gw: int) -> None:
    """Write (K, p*p*3) patches into a (3, H, W) image at the grid positions `idx` (in place)."""
    for patch, k in zip(patches, idx.tolist()):
        r, c = divmod(k, gw)
        canvas[:, r * p : (r + 1) * p, c * p : (c + 1) * p] = patch.reshape(p, p, 3).permute(2, 0, 1)


@torch.no_grad()
def decode_predictions(
    model: IJEPA,
    decoder: PatchDecoder,
    imgs: torch.Tensor,
    masks_enc: list[torch.Tensor],
    masks_pred: list[torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Images (B, 3, H, W): the context alone, context + decoded predictions, context + decoded targets."""
    p, grid = model.encoder.patch_size, model.encoder.grid_size
    gw = grid[1]
    b = len(imgs)
    preds = model.predict(imgs, masks_enc[:1], masks_pred)  # (npred * B, Kp, D), mask-major
    feats = target_features(model, imgs)
    full_target = unpatchify(decoder(feats), p, grid)
    context = torch.full_like(imgs, 0.0)  # 0 = the dataset mean after normalisation: a neutral grey
    for i in range(b):
        _paint(context[i], patchify(imgs[i : i + 1], p)[0][masks_enc[0][i]], masks_enc[0][i], p, gw)
    predicted, oracle = context.clone(), context.clone()
    pred_pixels = decoder(preds)
    for j, m in enumerate(masks_pred):
        for i in range(b):
            _paint(predicted[i], pred_pixels[j * b + i], m[i], p, gw)
            _paint(oracle[i], patchify(full_target[i : i + 1], p)[0][m[i]], m[i], p, gw)
    return {
        "context": context,
        "predicted": predicted,
        "oracle": oracle,
        "cosine": torch.cat(
            [
                F.cosine_similarity(
                    preds[j * b : (j + 1) * b], feats.gather(1, m.unsqueeze(-1).expand(-1, -1, feats.shape[-1])), dim=-1
                ).flatten()
                for j, m in enumerate(masks_pred)
            ]
        ),
    }


def predict_grid(
    checkpoint: str | Path,
    data: str,
    out: str | Path,
    *,
    n_images: int = 8,
    decoder_images: int = 2000,
    decoder_steps: int = 1500,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = False,
) -> PredictionGrid:
    """Train the decoder on `data`'s train split, decode predictions for test images, write a PNG grid."""
    from matplotlib.collections import LineCollection

    from ..evaluate.runner import eval_datasets
    from ..masks.build import run_mask_collator
    from ._figure import TARGET_COLORS, _hide_ticks, _new_figure, _save, denormalize
    from .masks import _outline_segments

    t0 = time.perf_counter()
    model, path = load_ijepa(checkpoint, device)
    if model.target_type != "representation":
        raise ValueError(
            f"{path} was trained with pixel targets: its predictor already outputs (normalised) "
            f"pixels, there are no representations to decode"
        )
    img_size, p = int(model.encoder.img_size[0]), model.encoder.patch_size
    grid = (int(model.encoder.grid_size[0]), int(model.encoder.grid_size[1]))
    train_ds, test_ds = eval_datasets(data, img_size, max_train=decoder_images, max_test=n_images)
    if len(test_ds) == 0:  # type: ignore[arg-type]  # torch's Dataset declares no __len__
        raise ValueError(f"{data} has no test images to visualise")
    train_imgs = torch.stack([train_ds[i][0] for i in range(len(train_ds))])  # type: ignore[arg-type]
    decoder, metrics = train_decoder(model, train_imgs, steps=decoder_steps, seed=seed, progress=progress)
    imgs = torch.stack([test_ds[i][0] for i in range(min(n_images, len(test_ds)))]).to(device)  # type: ignore[arg-type]
    collator, mask_source = run_mask_collator(path.parent, img_size, p)
    g = torch.Generator().manual_seed(seed)
    masks_enc, masks_pred = collator.sample(len(imgs), g)
    masks_enc = [m.to(device) for m in masks_enc]
    masks_pred = [m.to(device) for m in masks_pred]
    dec = decode_predictions(model, decoder, imgs, masks_enc, masks_pred)
    metrics["pred_target_cosine"] = float(dec["cosine"].mean())

    columns = [
        ("image", imgs),
        ("context (input)", dec["context"]),
        ("predictor output, decoded", dec["predicted"]),
        ("target features, decoded", dec["oracle"]),
    ]
    rows = len(imgs)
    fig = _new_figure((2.0 * len(columns), 2.0 * rows + 0.6))
    arrays = [denormalize(x) for _, x in columns]
    for r in range(rows):
        for c, (title, _) in enumerate(columns):
            ax = fig.add_subplot(rows, len(columns), r * len(columns) + c + 1)
            ax.imshow(arrays[c][r], interpolation="nearest")
            _hide_ticks(ax)
            if r == 0:
                ax.set_title(title, fontsize=8)
            if c >= 1:
                for j, m in enumerate(masks_pred):
                    segs = _outline_segments(m[r].cpu().numpy(), grid, (img_size, img_size))
                    ax.add_collection(
                        LineCollection(segs, colors=[TARGET_COLORS[j % len(TARGET_COLORS)]], linewidths=1.0)
                    )
    fig.suptitle(
        f"{path.name}: what the predictor predicts behind the mask (per-patch MLP decoder; "
        f"held-out decoder MSE {metrics['decoder_val_mse']:.3f} vs pixel variance "
        f"{metrics['pixel_var']:.3f})",
        fontsize=8,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    written = _save(fig, out, 120)
    metrics["mask_source"] = mask_source  # type: ignore[assignment]
    logger.info("viz predict: %s", metrics)
    return PredictionGrid(written, metrics, time.perf_counter() - t0)


__all__ = [
    "PatchDecoder",
    "unpatchify",
    "load_ijepa",
    "target_features",
    "train_decoder",
    "decode_predictions",
    "predict_grid",
    "PredictionGrid",
]
