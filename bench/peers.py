"""Peers: lightly's I-JEPA against openjepa's, same encoder size, same data, same wall time, same probe.

Trains lightly's I-JEPA (pip install lightly) the way its documented example (examples/pytorch/ijepa.py)
does: a torchvision ViT wrapped by `IJEPABackbone.from_vit`, an `IJEPAPredictor`, `IJEPAMaskCollator`
with its default mask settings, `SmoothL1Loss` against layer-normed target tokens, AdamW at a constant
1.5e-4 and a linear EMA momentum 0.996 -> 1 over the run (here: over the wall-clock budget). Sizes are
openjepa's CIFAR-10 recipe (ViT-Tiny width 192, depth 6, 3 heads, 4-px patches on 32 px; predictor
depth 4, width 96); the images come from openjepa's own training pipeline (RandomResizedCrop 0.6-1.0,
ImageNet normalisation), batch 64, CPU, fp32. openjepa's shipped recipe trains for the same minutes
(or `--ours` reuses a trained run folder). Every encoder, and each architecture at random init, is
probed by openjepa's evaluate_encoder (linear and kNN); raw pixels give the floor.

The token offset of lightly 1.6.0 (variant `lightly`, as its users get it): the collator's indices
are positions on the h x w patch grid, i = r * w + c (ijepa_collate.py: `torch.nonzero(mask.flatten())`
of an (h, w) mask). `IJEPABackbone.encode` prepends the class token (ijepa.py:442,
`images_to_tokens(images, prepend_class_token=True)`), and `IJEPAEncoder.forward` gathers the context
with those indices from the (B, 1 + h*w, D) sequence (ijepa.py:248-250); the example's forward_target
gathers the targets the same way from the target encoder's (B, 1 + h*w, D) output. So index i lands on
sequence token i, which is patch i - 1: for c >= 1 the patch left of (r, c); for c = 0 the last patch of
row r - 1 (a block touching the left edge wraps onto the right edge one row up); index 0 is the class
token. The predictor's positional table has no class token (ijepa.py:72-80, indexed at 139-145), so it
places each of these tokens, and each query, one patch to the right of where its content came from.
Variant `lightly-fixed` adds 1 to the indices where they address the class-token sequence (the context
gather in the backbone and the target gather) and leaves the predictor's indices alone: the smallest
change that makes context, target and predictor positions name the same patch. Dropping the class
token instead would also need lightly's positional embedding (65 entries) and its interpolation cut.
The class token then never enters the context; the target encoder still attends to it, as in lightly.

    python bench/peers.py --data ../shared/data/cifar10_32px.npz --minutes 15 --out runs/peers \\
        --ours runs/tta15/shipped-s0

Prints one JSON line and writes it to <out>/peers.json.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import logging
import math
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from openjepa.config import Config, load_config, recipe_path
from openjepa.config.loading import config_to_dict
from openjepa.core.checkpoint import list_checkpoints, load_checkpoint
from openjepa.core.precision import cpu_summary
from openjepa.data import make_loader
from openjepa.data.build import build_train_dataset
from openjepa.evaluate.runner import evaluate_encoder
from openjepa.models.build import build_model
from openjepa.train.budget import budgeted_config
from openjepa.train.loop import fit

TASKS = ("linear", "knn")
VARIANTS = {"lightly": 0, "lightly-fixed": 1}  # variant -> offset added to the class-token sequence indices
RECIPE = "cifar10_vit_tiny_p4"
# openjepa's CIFAR-10 recipe sizes (configs/cifar10_vit_tiny_p4.yaml)
IMG, PATCH, WIDTH, DEPTH, HEADS, MLP = 32, 4, 192, 6, 3, 768
PRED_DEPTH, PRED_WIDTH, PRED_HEADS, PRED_MLP = 4, 96, 3, 384
# lightly's example (examples/pytorch/ijepa.py): AdamW lr, EMA endpoints
LR, EMA = 1.5e-4, (0.996, 1.0)


def require_lightly() -> str:
    """lightly's version, or exit saying how to install it."""
    try:
        import lightly
    except ImportError:
        raise SystemExit(
            "bench/peers.py compares against lightly, which is not installed: pip install lightly"
        ) from None
    return str(lightly.__version__)


class LightlyEncoder(nn.Module):
    """A lightly IJEPABackbone seen as openjepa's probes see an encoder: normed patch tokens, no class token."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.img_size = (backbone.image_size, backbone.image_size)
        self.embed_dim = backbone.hidden_dim

    @property
    def blocks(self) -> nn.Module:
        """The transformer blocks (pool_features' "avg_all" counts them)."""
        return self.backbone.encoder.layers

    def _tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1 + T, D): class + patch tokens with positions, as IJEPAEncoder.forward builds them."""
        enc = self.backbone.encoder
        x = self.backbone.images_to_tokens(images, prepend_class_token=True)
        return enc.dropout(x + enc.interpolate_pos_encoding(x))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, T, D) patch tokens after the final norm."""
        enc = self.backbone.encoder
        return enc.ln(enc.layers(self._tokens(images)))[:, 1:]

    def get_intermediate_layers(self, images: torch.Tensor, n: int = 1) -> list[torch.Tensor]:
        """The last `n` blocks' patch tokens, each (B, T, D) through the final norm, oldest first."""
        enc = self.backbone.encoder
        x, outs = self._tokens(images), []
        first = len(enc.layers) - n
        for i, block in enumerate(enc.layers):
            x = block(x)
            if i >= first:
                outs.append(enc.ln(x)[:, 1:])
        return outs


def build_lightly(seed: int) -> tuple[nn.Module, nn.Module]:
    """(backbone, predictor) at the recipe's sizes, built and initialised by torchvision and lightly."""
    from lightly.models.modules.ijepa import IJEPABackbone, IJEPAPredictor
    from torchvision.models import vision_transformer as tv

    torch.manual_seed(seed)
    vit = tv.VisionTransformer(
        image_size=IMG, patch_size=PATCH, num_layers=DEPTH, num_heads=HEADS, hidden_dim=WIDTH, mlp_dim=MLP
    )
    backbone = IJEPABackbone.from_vit(vit)
    n = (IMG // PATCH) ** 2
    # IJEPAPredictor's `mlp_dim` is both the encoder width (its in/out projections) and its blocks' MLP
    # width; from_vit_encoder, the documented route, fixes those projections at 768 and takes the blocks
    # from a separate ViT encoder. Do the same with a 96-wide encoder, so the MLPs are 4x as openjepa's.
    predictor = IJEPAPredictor(
        seq_length=n,
        num_layers=PRED_DEPTH,
        num_heads=PRED_HEADS,
        hidden_dim=PRED_WIDTH,
        predictor_embed_dim=PRED_WIDTH,
        num_patches=n,
        mlp_dim=WIDTH,
        dropout=0.0,
        attention_dropout=0.0,
    )
    blocks = tv.Encoder(n, PRED_DEPTH, PRED_HEADS, PRED_WIDTH, PRED_MLP, 0.0, 0.0, partial(nn.LayerNorm, eps=1e-6))
    predictor.layers, predictor.ln = blocks.layers, blocks.ln
    return backbone, predictor


def shifted(masks: list[torch.Tensor], offset: int) -> list[torch.Tensor]:
    """Grid indices as indices into the class-token sequence (offset 1), or as lightly uses them (0)."""
    return [m + offset for m in masks]


def forward_context(
    backbone: nn.Module, predictor: nn.Module, imgs: torch.Tensor, masks_enc: list, masks_pred: list, offset: int
) -> torch.Tensor:
    """Predictions (B * npred, K, D) for the target blocks from the context block, as lightly's example."""
    z = backbone(imgs, shifted(masks_enc, offset))  # (B, Kc, D)
    return predictor(z, masks_enc, masks_pred)  # the predictor's table has no class token: grid indices


@torch.no_grad()
def forward_target(
    target: nn.Module, imgs: torch.Tensor, masks_enc: list, masks_pred: list, offset: int
) -> torch.Tensor:
    """Layer-normed target tokens (B * npred, K, D) of the EMA encoder, as lightly's example."""
    from lightly.models import utils

    h = target(imgs)  # (B, 1 + T, D)
    h = F.layer_norm(h, (h.size(-1),))
    h = utils.apply_masks(h, shifted(masks_pred, offset))
    return utils.repeat_interleave_batch(h, len(imgs), repeat=len(masks_enc))


def lightly_settings(
    collator: object, optimizer: torch.optim.Optimizer, offset: int, cfg: Config, params: dict
) -> dict:
    """Everything the lightly run used, for the JSON."""
    opt = optimizer.defaults
    keys = ("enc_mask_scale", "pred_mask_scale", "aspect_ratio", "nenc", "npred", "min_keep", "allow_overlap")
    return {
        "index_offset": offset,
        "encoder": f"torchvision VisionTransformer({IMG}px, patch {PATCH}, depth {DEPTH}, width {WIDTH}, "
        f"{HEADS} heads, mlp {MLP}) -> IJEPABackbone.from_vit (class token, learned positions)",
        "predictor": f"IJEPAPredictor depth {PRED_DEPTH}, width {PRED_WIDTH}, {PRED_HEADS} heads, mlp {PRED_MLP}",
        "params": params,
        "collator": {"input_size": IMG, "patch_size": collator.patch_size, **{k: getattr(collator, k) for k in keys}},
        "optimizer": {"name": type(optimizer).__name__, **{k: opt[k] for k in ("lr", "betas", "eps", "weight_decay")}},
        "lr_schedule": "constant (lightly's example)",
        "ema": list(EMA),
        "ema_schedule": "linear in elapsed/budget (the example: linear over its planned steps)",
        "loss": "SmoothL1Loss(beta=1.0) on F.layer_norm'd target tokens",
        "batch_size": cfg.data.batch_size,
        "num_workers": cfg.data.num_workers,
        "data": f"openjepa build_train_dataset: RandomResizedCrop({cfg.data.crop_size}, scale={cfg.data.crop_scale}), "
        "ImageNet normalisation",
        "device": "cpu",
        "precision": "fp32",
    }


def count(module: nn.Module, skip: tuple[str, ...] = ()) -> int:
    """Parameters of a module, less those under the named (unused) attributes."""
    return sum(p.numel() for n, p in module.named_parameters() if not n.startswith(skip))


def train_lightly(variant: str, cfg: Config, seconds: float, seed: int) -> dict:
    """Train lightly's I-JEPA for `seconds` of wall time on cfg's data: {encoder, steps, seconds, loss, settings}."""
    from lightly.data import IJEPAMaskCollator
    from lightly.models.utils import update_momentum

    t0 = time.perf_counter()  # as fit's max_minutes: building the networks and data counts
    offset = VARIANTS[variant]
    dataset = build_train_dataset(cfg)
    backbone, predictor = build_lightly(seed)
    target = copy.deepcopy(backbone)
    collator = IJEPAMaskCollator(input_size=IMG, patch_size=PATCH)  # lightly's default mask settings
    optimizer = torch.optim.AdamW([*backbone.parameters(), *predictor.parameters()], lr=LR)
    criterion = nn.SmoothL1Loss()
    steps, loss, done = 0, math.nan, False
    for epoch in itertools.count():
        dataset.set_epoch(epoch)
        loader = make_loader(
            dataset, cfg.data.batch_size, collator, seed=seed, epoch=epoch, num_workers=cfg.data.num_workers
        )
        for (imgs, _), masks_enc, masks_pred in loader:  # masks: lists of (B, K) grid indices
            z = forward_context(backbone, predictor, imgs, masks_enc, masks_pred, offset)
            h = forward_target(target, imgs, masks_enc, masks_pred, offset)
            step_loss = criterion(z, h)
            optimizer.zero_grad()
            step_loss.backward()
            optimizer.step()
            elapsed = time.perf_counter() - t0
            update_momentum(backbone, target, EMA[0] + (EMA[1] - EMA[0]) * min(1.0, elapsed / seconds))
            steps, loss = steps + 1, float(step_loss.detach())
            if elapsed > seconds:
                done = True
                break
        if done:
            break
    params = {"encoder": count(backbone, ("heads",)), "predictor": count(predictor, ("pos_embedding",))}
    return {
        "encoder": LightlyEncoder(target),
        "steps": steps,
        "seconds": round(time.perf_counter() - t0, 1),
        "last_loss": loss,
        "settings": lightly_settings(collator, optimizer, offset, cfg, params),
    }


def recipe_config(data: str, seed: int, extra: list[str] | None = None) -> Config:
    """openjepa's shipped recipe on `data`, on the CPU."""
    return load_config(
        recipe_path(RECIPE), [f"data.dataset={data}", f"meta.seed={seed}", "meta.device=cpu", *(extra or [])]
    )


def openjepa_run(folder: Path, cfg: Config) -> dict:
    """The target encoder of a run folder's last checkpoint, with its steps, seconds and config."""
    found = list_checkpoints(folder)
    if not found:
        raise SystemExit(f"--ours {folder}: no checkpoint in that folder (has its run finished?)")
    step, path = found[-1]
    model = build_model(cfg)
    encoder = model.target_encoder
    encoder.load_state_dict(load_checkpoint(path)["target_encoder"])
    started = (folder / "params-ijepa.yaml").stat().st_mtime  # written as fit begins
    return {
        "encoder": encoder,
        "steps": step,
        "seconds": round(path.stat().st_mtime - started, 1),
        "settings": {
            "run": str(folder),
            "params": {"encoder": count(encoder), "predictor": count(model.predictor)},
            **config_to_dict(cfg),
        },
    }


def train_ours(args: argparse.Namespace) -> dict:
    """openjepa's shipped recipe for `--minutes` (schedule sized to the budget), or the `--ours` run."""
    if args.ours:
        folder = Path(args.ours)
        return openjepa_run(folder, load_config(folder / "params-ijepa.yaml"))
    folder = Path(args.out) / "openjepa"
    base = [f"data.dataset={args.data}", f"logging.folder={folder}", f"meta.seed={args.seed}", "meta.device=cpu"]
    cfg, _ = budgeted_config(recipe_path(RECIPE), [*base, *args.overrides], args.minutes)
    result = fit(cfg, progress=False)
    run = openjepa_run(folder, cfg)
    return {**run, "seconds": round(result.seconds, 1), "last_loss": result.last_loss}


def probe(encoder: nn.Module | str, args: argparse.Namespace) -> dict:
    """Linear and kNN top-1 of an encoder (or "pixels") on the test split."""
    return {
        task: round(
            evaluate_encoder(
                encoder,
                args.data,
                task,
                pooling=None if isinstance(encoder, str) else args.pooling,
                max_train=args.max_train,
                max_test=args.max_test,
                device="cpu",
                cache_dir=Path(args.out) / "features",
                progress=False,
            ).top1,
            4,
        )
        for task in TASKS
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="dataset spec (an .npz such as ../shared/data/cifar10_32px.npz)")
    ap.add_argument("--minutes", type=float, required=True, help="wall-clock training budget of every encoder")
    ap.add_argument("--out", default="runs/peers")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ours", help="a trained openjepa run folder to probe instead of training the recipe")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--pooling", default="avg_last4", help="what the probes read")
    ap.add_argument("--max-train", type=int, help="probe on the first N train images only")
    ap.add_argument("--max-test", type=int)
    ap.add_argument(
        "--set", dest="overrides", action="append", default=[], help="recipe override (data.* reach lightly too)"
    )
    args = ap.parse_args()
    lightly_version = require_lightly()
    logging.basicConfig(level=logging.WARNING)
    Path(args.out).mkdir(parents=True, exist_ok=True)

    runs = {"openjepa": train_ours(args)}
    cfg = recipe_config(args.data, args.seed, args.overrides)
    for variant in args.variants:
        runs[variant] = train_lightly(variant, cfg, 60 * args.minutes, args.seed)
    encoders = {
        name: {**{k: v for k, v in run.items() if k != "encoder"}, **probe(run["encoder"], args)}
        for name, run in runs.items()
    }
    floors = {
        "openjepa random init": probe(build_model(cfg).target_encoder, args),
        "lightly random init": probe(LightlyEncoder(build_lightly(args.seed)[0]), args),
        "pixels": probe("pixels", args),
    }
    line = {
        "bench": "peers",
        "data": args.data,
        "minutes": args.minutes,
        "seed": args.seed,
        "pooling": args.pooling,
        "max_train": args.max_train,
        "max_test": args.max_test,
        "encoders": encoders,
        "floors": floors,
        "cpu": cpu_summary(),
        "torch": torch.__version__,
        "lightly": lightly_version,
    }
    (Path(args.out) / "peers.json").write_text(json.dumps(line) + "\n")
    print(json.dumps(line))


if __name__ == "__main__":
    main()
