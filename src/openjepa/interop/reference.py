"""The reference implementation's checkpoint format (facebookresearch/ijepa `.pth.tar`).

A reference checkpoint is a dict with the three networks saved from DDP (every key starts with
`module.`) plus training state, in this order:

    {"encoder", "predictor", "target_encoder", "opt", "scaler", "epoch", "loss", "batch_size",
     "world_size", "lr"}

Parameter names are the same as ours once `module.` is stripped, and the reference's AdamW groups
are ordered as ours (`openjepa.train.optim.param_groups`), so the optimizer state carries over too.
The number of attention heads is not stored anywhere: it comes from the caller or a preset of the
same width.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..core.checkpoint import FORMAT, FORMAT_VERSION, CheckpointError
from ..models.registry import ENCODER_SPECS
from ._util import add_module_prefix, is_state_dict, load_torch_file, logger, strip_module_prefix

NETWORKS = ("encoder", "predictor", "target_encoder")
REFERENCE_KEYS = (
    "encoder",
    "predictor",
    "target_encoder",
    "opt",
    "scaler",
    "epoch",
    "loss",
    "batch_size",
    "world_size",
    "lr",
)
_BLOCK = re.compile(r"^blocks\.(\d+)\.")
_PRED_BLOCK = re.compile(r"^predictor_blocks\.(\d+)\.")

__all__ = [
    "load_reference_checkpoint",
    "infer_encoder_arch",
    "infer_predictor_arch",
    "infer_arch",
    "to_reference_checkpoint",
    "from_reference_checkpoint",
    "preset_for_arch",
    "config_for_arch",
    "strip_module_prefix",
    "add_module_prefix",
    "NETWORKS",
    "REFERENCE_KEYS",
]


def load_reference_checkpoint(path_or_dict: str | Path | Mapping[str, Any]) -> dict:
    """Load a reference checkpoint safely (no arbitrary unpickling) and strip `module.` from its networks.

    Accepts a path to a `.pth.tar` or an already loaded dict. Returns a new dict with the same keys;
    the networks present among encoder / predictor / target_encoder have plain parameter names.
    """
    if isinstance(path_or_dict, Mapping):
        ckpt, where = path_or_dict, "checkpoint dict"
    else:
        ckpt, where = load_torch_file(path_or_dict), str(path_or_dict)
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{where} is not a reference I-JEPA checkpoint (got {type(ckpt).__name__})")
    if not any(isinstance(ckpt.get(k), Mapping) for k in ("encoder", "target_encoder")):
        raise CheckpointError(
            f"{where} is not a reference I-JEPA checkpoint: it has no 'encoder' or "
            f"'target_encoder' state dict (keys: {', '.join(map(str, list(ckpt)[:10]))})"
        )
    out = dict(ckpt)
    for k in NETWORKS:
        if isinstance(out.get(k), Mapping):
            out[k] = strip_module_prefix(out[k])
    return out


def _isqrt_exact(n: int, what: str) -> int:
    g = math.isqrt(n)
    if g * g != n:
        raise CheckpointError(f"{what} has {n} positions, not a square grid; I-JEPA encoders are square")
    return g


def _count(pattern: re.Pattern, keys) -> int:
    idx = {int(m.group(1)) for k in keys if (m := pattern.match(k))}
    if idx and idx != set(range(len(idx))):
        raise CheckpointError(f"block indices are not contiguous: {sorted(idx)}")
    return len(idx)


def preset_for_arch(arch: Mapping[str, Any]) -> str | None:
    """The preset (vit_tiny .. vit_giant) with this width, depth, heads and MLP ratio, if any."""
    for name, spec in ENCODER_SPECS.items():
        if (
            spec.embed_dim == arch.get("embed_dim")
            and spec.depth == arch.get("depth")
            and spec.num_heads == arch.get("num_heads")
            and int(spec.embed_dim * spec.mlp_ratio) == int(arch["embed_dim"] * arch["mlp_ratio"])
        ):
            return name
    return None


def infer_encoder_arch(
    state_dict: Mapping[str, Any], num_heads: int | None = None, model_name: str | None = None
) -> dict:
    """Encoder architecture from its weights: patch size, width, depth, MLP ratio, grid and image size.

    The number of heads is not in the weights: it is `num_heads` if given, else that of `model_name`,
    else that of the preset (ENCODER_SPECS) with the same width; otherwise this raises, asking for it.
    Returns the encoder keys of `IJEPA.arch()`: patch_size, img_size [s, s], embed_dim, depth,
    num_heads, mlp_ratio.
    """
    if isinstance(state_dict, Mapping) and any(isinstance(state_dict.get(k), Mapping) for k in NETWORKS):
        raise CheckpointError(
            "got a whole checkpoint, not an encoder state dict: pass "
            "ckpt['target_encoder'] (the EMA encoder the paper evaluates) or ckpt['encoder']"
        )
    sd = strip_module_prefix(state_dict)
    for key in ("patch_embed.proj.weight", "pos_embed"):
        if key not in sd:
            raise CheckpointError(
                f"not an I-JEPA encoder state dict: no {key!r} (first keys: {', '.join(list(sd)[:5])})"
            )
    w = sd["patch_embed.proj.weight"]
    if w.ndim != 4 or w.shape[2] != w.shape[3]:
        raise CheckpointError(f"patch_embed.proj.weight has shape {tuple(w.shape)}; expected (D, C, p, p)")
    embed_dim, patch = int(w.shape[0]), int(w.shape[2])
    if w.shape[1] != 3:
        raise CheckpointError(f"encoder takes {w.shape[1]} input channels; openjepa encoders take RGB (3)")
    pos = sd["pos_embed"]
    if pos.ndim != 3 or pos.shape[-1] != embed_dim:
        raise CheckpointError(f"pos_embed has shape {tuple(pos.shape)}; expected (1, N, {embed_dim})")
    grid = _isqrt_exact(int(pos.shape[1]), "pos_embed")
    depth = _count(_BLOCK, sd)
    if depth == 0:
        raise CheckpointError("encoder state dict has no transformer blocks ('blocks.N.*')")
    fc1 = sd.get("blocks.0.mlp.fc1.weight")
    if fc1 is None:
        raise CheckpointError("encoder state dict lacks blocks.0.mlp.fc1.weight")
    mlp_ratio = int(fc1.shape[0]) / embed_dim

    if num_heads is None and model_name is not None:
        if model_name not in ENCODER_SPECS:
            raise ValueError(f"unknown model {model_name!r}; choose one of {', '.join(ENCODER_SPECS)}")
        num_heads = ENCODER_SPECS[model_name].num_heads
    if num_heads is None:
        matches = {spec.num_heads for spec in ENCODER_SPECS.values() if spec.embed_dim == embed_dim}
        if len(matches) == 1:
            num_heads = matches.pop()
            logger.info("encoder width %d matches a preset: using %d attention heads", embed_dim, num_heads)
        else:
            raise CheckpointError(
                f"cannot tell the number of attention heads of a width-{embed_dim} encoder: heads are not "
                f"stored in the weights and no preset has width {embed_dim}; pass num_heads "
                f"(--num-heads)"
            )
    num_heads = int(num_heads)
    if embed_dim % num_heads:
        raise CheckpointError(f"width {embed_dim} is not divisible by num_heads={num_heads}")
    return {
        "patch_size": patch,
        "img_size": [grid * patch, grid * patch],
        "embed_dim": embed_dim,
        "depth": depth,
        "num_heads": num_heads,
        "mlp_ratio": mlp_ratio,
    }


def infer_predictor_arch(
    state_dict: Mapping[str, Any], enc_arch: Mapping[str, Any], predictor_heads: int | None = None
) -> dict:
    """Predictor width and depth from its weights; heads default to the encoder's (as the reference)."""
    sd = strip_module_prefix(state_dict)
    if "predictor_embed.weight" not in sd:
        raise CheckpointError("not an I-JEPA predictor state dict: no 'predictor_embed.weight'")
    emb = int(sd["predictor_embed.weight"].shape[0])
    depth = _count(_PRED_BLOCK, sd)
    heads = int(predictor_heads or enc_arch["num_heads"])
    if emb % heads:
        raise CheckpointError(f"predictor width {emb} is not divisible by {heads} heads; pass predictor_heads")
    out_dim = int(sd["predictor_proj.weight"].shape[0]) if "predictor_proj.weight" in sd else enc_arch["embed_dim"]
    return {
        "pred_depth": depth,
        "pred_emb_dim": emb,
        "predictor_heads": heads,
        "target_type": "representation" if out_dim == enc_arch["embed_dim"] else "pixels",
        "target_from": "output",
        "loss": "smooth_l1",
    }


def infer_arch(ckpt: Mapping[str, Any], num_heads: int | None = None, predictor_heads: int | None = None) -> dict:
    """Full IJEPA.arch() of a (module-stripped) reference checkpoint."""
    target = ckpt.get("target_encoder")
    enc = target if isinstance(target, Mapping) else ckpt["encoder"]
    arch = infer_encoder_arch(enc, num_heads=num_heads)
    if isinstance(ckpt.get("predictor"), Mapping):
        arch.update(infer_predictor_arch(ckpt["predictor"], arch, predictor_heads))
    return arch


def _state_dicts(obj: Any) -> dict[str, dict]:
    if isinstance(obj, nn.Module):
        nets: dict[str, Any] = {k: getattr(obj, k, None) for k in NETWORKS}
        missing = [k for k, v in nets.items() if v is None]
        if missing:
            raise CheckpointError(f"model lacks {', '.join(missing)}; pass an IJEPA")
        return {k: {n: t.detach() for n, t in v.state_dict().items()} for k, v in nets.items()}
    if isinstance(obj, Mapping):
        out = {k: strip_module_prefix(obj[k]) for k in NETWORKS if is_state_dict(obj.get(k))}
        missing = [k for k in NETWORKS if k not in out]
        if missing:
            raise CheckpointError(
                f"the source has no {', '.join(missing)}: the reference format stores encoder, predictor "
                f"and target_encoder (an encoder-only source cannot make a resumable reference checkpoint)"
            )
        return out
    raise TypeError(f"expected an IJEPA or a checkpoint dict, got {type(obj).__name__}")


def _config_get(state: Mapping[str, Any], section: str, key: str) -> Any:
    cfg = state.get("config")
    if isinstance(cfg, Mapping) and isinstance(cfg.get(section), Mapping):
        return cfg[section].get(key)
    return None


def to_reference_checkpoint(
    ijepa_or_state: Any,
    epoch: int | None = None,
    loss: float | None = None,
    batch_size: int | None = None,
    world_size: int | None = None,
    lr: float | None = None,
    opt: Mapping | None = None,
    scaler: Mapping | None = None,
) -> dict:
    """A dict laid out exactly as the reference saves it (`torch.save` it to a `.pth.tar`).

    `ijepa_or_state`: an IJEPA, one of our run checkpoints, or any dict with encoder / predictor /
    target_encoder state dicts. Arguments left as None are taken from the state when it has them
    (epoch, optimizer, scaler, world_size (else 1), `reference_meta` kept from an earlier import, config data.batch_size
    and optimization.lr); networks get the DDP `module.` prefix.
    """
    nets = _state_dicts(ijepa_or_state)
    state: Mapping[str, Any] = ijepa_or_state if isinstance(ijepa_or_state, Mapping) else {}
    stored_meta = state.get("reference_meta")
    ref_meta = stored_meta if isinstance(stored_meta, Mapping) else {}
    if epoch is None:
        epoch = state.get("epoch", ref_meta.get("epoch", 0))
    if loss is None:
        loss = ref_meta.get("loss", state.get("loss", 0.0))
    if batch_size is None:
        batch_size = ref_meta.get("batch_size", _config_get(state, "data", "batch_size"))
    if lr is None:
        lr = ref_meta.get("lr", _config_get(state, "optimization", "lr"))
    if world_size is None:
        world_size = ref_meta.get("world_size", 1)
    if opt is None:
        opt = state.get("optimizer", state.get("opt"))
    if scaler is None:
        scaler = state.get("scaler")
    return {
        "encoder": add_module_prefix(nets["encoder"]),
        "predictor": add_module_prefix(nets["predictor"]),
        "target_encoder": add_module_prefix(nets["target_encoder"]),
        "opt": opt,
        "scaler": scaler,
        "epoch": epoch,
        "loss": loss,
        "batch_size": batch_size,
        "world_size": world_size,
        "lr": lr,
    }


def config_for_arch(arch: Mapping[str, Any], batch_size: int | None = None, lr: float | None = None) -> dict:
    """A partial openjepa config (only keys known from the weights) for a converted checkpoint."""
    meta: dict[str, Any] = {}
    name = preset_for_arch(arch)
    if name is not None:
        meta["model_name"] = name
    if "pred_depth" in arch:
        meta.update(pred_depth=arch["pred_depth"], pred_emb_dim=arch["pred_emb_dim"])
        if arch["predictor_heads"] != arch["num_heads"]:
            meta["predictor_heads"] = arch["predictor_heads"]
    cfg: dict[str, Any] = {
        "meta": meta,
        "data": {"crop_size": int(arch["img_size"][0])},
        "mask": {"patch_size": arch["patch_size"]},
    }
    if batch_size is not None:
        cfg["data"]["batch_size"] = int(batch_size)
    if lr is not None:
        cfg["optimization"] = {"lr": float(lr)}
    if arch.get("target_type") == "pixels":
        cfg.setdefault("optimization", {})["target"] = "pixels"
    return cfg


def from_reference_checkpoint(
    path_or_dict: str | Path | Mapping[str, Any], num_heads: int | None = None, predictor_heads: int | None = None
) -> dict:
    """One of our run checkpoints (dict) from a reference checkpoint; tensors are shared, not copied.

    All three networks, the optimizer state (`opt` -> `optimizer`) and the scaler are kept; epoch,
    loss, batch size, world size and lr are kept under `reference_meta` so that converting back
    reproduces the reference file. `step` is unknown in the reference format and set to 0.
    """
    ref = load_reference_checkpoint(path_or_dict)
    missing = [k for k in NETWORKS if not is_state_dict(ref.get(k))]
    if missing:
        raise CheckpointError(
            f"reference checkpoint lacks {', '.join(missing)}; an openjepa run checkpoint "
            f"needs all three networks (use encoder_only=True / --encoder-only for "
            f"an evaluation-only file)"
        )
    arch = infer_arch(ref, num_heads=num_heads, predictor_heads=predictor_heads)
    ref_meta = {k: ref.get(k) for k in ("epoch", "loss", "batch_size", "world_size", "lr") if k in ref}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config_for_arch(arch, ref.get("batch_size"), ref.get("lr")),
        "arch": arch,
        "encoder": ref["encoder"],
        "predictor": ref["predictor"],
        "target_encoder": ref["target_encoder"],
        "optimizer": ref.get("opt"),
        "scaler": ref.get("scaler"),
        "step": 0,
        "epoch": ref.get("epoch", 0),
        "source_format": "reference",
        "reference_meta": ref_meta,
    }
