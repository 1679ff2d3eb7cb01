"""Hugging Face `transformers` I-JEPA folders (`IJepaModel.from_pretrained(folder)`), both ways.

Writing needs no `transformers` install: the folder holds `config.json` (IJepaConfig),
`model.safetensors` and `preprocessor_config.json` (ViTImageProcessor).

Key mapping (per block i), ours -> HF's checkpoint names (the names `save_pretrained` writes and
the hub's facebook/ijepa_* models use; transformers 5 renames them to `layers.i.attention.q_proj`
etc. on load, and this module reads either spelling):

    patch_embed.proj.*          -> embeddings.patch_embeddings.projection.*
    pos_embed                   -> embeddings.position_embeddings   (our sin-cos values, stored)
    blocks.i.norm1.*            -> encoder.layer.i.layernorm_before.*
    blocks.i.attn.qkv.*         -> encoder.layer.i.attention.attention.{query,key,value}.*
                                   (the fused qkv rows are [q; k; v], each `width` rows)
    blocks.i.attn.proj.*        -> encoder.layer.i.attention.output.dense.*
    blocks.i.norm2.*            -> encoder.layer.i.layernorm_after.*
    blocks.i.mlp.fc1.*          -> encoder.layer.i.intermediate.dense.*
    blocks.i.mlp.fc2.*          -> encoder.layer.i.output.dense.*
    norm.*                      -> layernorm.*   (HF's final LayerNorm = our final norm, eps 1e-6)

Differences to know: HF's position embeddings are a learned-shape Parameter; at another input
size it bicubic-interpolates them only with `interpolate_pos_encoding=True` (otherwise it raises),
whereas our encoder recomputes the exact sin-cos table. The HF config's default layer_norm_eps is
1e-12; we write 1e-6 as the reference uses. `IJepaModel` has no pooler by default: average
`last_hidden_state` over tokens to get our "avg" features.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..core.checkpoint import CheckpointError
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ._util import encoder_arch, load_torch_file, logger

__all__ = [
    "encoder_to_hf_state_dict",
    "hf_to_encoder_state_dict",
    "hf_config",
    "arch_from_hf_config",
    "hf_preprocessor_config",
    "save_hf",
    "load_hf",
    "is_hf_folder",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PT_WEIGHTS_NAME = "pytorch_model.bin"
PREPROCESSOR_NAME = "preprocessor_config.json"

_OURS_PER_BLOCK = {
    "norm1": "layernorm_before",
    "attn.proj": "attention.output.dense",
    "norm2": "layernorm_after",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}
# transformers >= 5 module names -> checkpoint names, for reading state dicts of live models.
_NEW_TO_OLD = [
    (re.compile(r"^layers\.(\d+)\.attention\.q_proj\."), r"encoder.layer.\1.attention.attention.query."),
    (re.compile(r"^layers\.(\d+)\.attention\.k_proj\."), r"encoder.layer.\1.attention.attention.key."),
    (re.compile(r"^layers\.(\d+)\.attention\.v_proj\."), r"encoder.layer.\1.attention.attention.value."),
    (re.compile(r"^layers\.(\d+)\.attention\.o_proj\."), r"encoder.layer.\1.attention.output.dense."),
    (re.compile(r"^layers\.(\d+)\.mlp\.fc1\."), r"encoder.layer.\1.intermediate.dense."),
    (re.compile(r"^layers\.(\d+)\.mlp\.fc2\."), r"encoder.layer.\1.output.dense."),
    (re.compile(r"^layers\.(\d+)\."), r"encoder.layer.\1."),
]
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_HF_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")


def encoder_to_hf_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our encoder state dict -> HF IJepaModel checkpoint names (qkv split into query/key/value)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        if k == "pos_embed":
            out["embeddings.position_embeddings"] = v
        elif k.startswith("patch_embed.proj."):
            out["embeddings.patch_embeddings.projection." + k[len("patch_embed.proj.") :]] = v
        elif k.startswith("norm."):
            out["layernorm." + k[len("norm.") :]] = v
        elif m := _BLOCK.match(k):
            i, rest = m.groups()
            prefix = f"encoder.layer.{i}."
            if rest.startswith("attn.qkv."):
                kind = rest[len("attn.qkv.") :]
                q, kk, vv = v.chunk(3, dim=0)
                # Separate storage: safetensors refuses tensors that share memory.
                out[prefix + f"attention.attention.query.{kind}"] = q.clone()
                out[prefix + f"attention.attention.key.{kind}"] = kk.clone()
                out[prefix + f"attention.attention.value.{kind}"] = vv.clone()
                continue
            for ours, theirs in _OURS_PER_BLOCK.items():
                if rest.startswith(ours + "."):
                    out[prefix + theirs + rest[len(ours) :]] = v
                    break
            else:
                raise CheckpointError(f"cannot map encoder key {k!r} to Hugging Face I-JEPA")
        else:
            raise CheckpointError(f"cannot map encoder key {k!r} to Hugging Face I-JEPA")
    return out


def _normalise_hf_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    dropped = []
    for k, v in state_dict.items():
        if k.startswith("ijepa."):  # IJepaForImageClassification
            k = k[len("ijepa.") :]
        if k.startswith(("classifier.", "pooler.")) or k == "embeddings.mask_token":
            dropped.append(k)
            continue
        for pat, repl in _NEW_TO_OLD:
            new, n = pat.subn(repl, k)
            if n:
                k = new
                break
        out[k] = v
    if dropped:
        logger.warning("ignoring Hugging Face weights that are not part of the encoder: %s", ", ".join(dropped))
    return out


def hf_to_encoder_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF IJepaModel weights (checkpoint or transformers-5 module names) -> our encoder state dict."""
    sd = _normalise_hf_keys(state_dict)
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        if k == "embeddings.position_embeddings":
            out["pos_embed"] = v
        elif k.startswith("embeddings.patch_embeddings.projection."):
            out["patch_embed.proj." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("layernorm."):
            out["norm." + k[len("layernorm.") :]] = v
        elif m := _HF_LAYER.match(k):
            i, rest = m.groups()
            if rest.startswith("attention.attention."):
                part, kind = rest[len("attention.attention.") :].split(".", 1)
                qkv.setdefault((i, kind), {})[part] = v
                continue
            for ours, theirs in _OURS_PER_BLOCK.items():
                if rest.startswith(theirs + "."):
                    out[f"blocks.{i}.{ours}{rest[len(theirs) :]}"] = v
                    break
            else:
                raise CheckpointError(f"unknown Hugging Face I-JEPA key {k!r}")
        else:
            raise CheckpointError(f"unknown Hugging Face I-JEPA key {k!r}")
    for (i, kind), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise CheckpointError(f"layer {i} has attention {kind} parts {sorted(parts)}; need query, key, value")
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]], 0)
    return _ordered(out)


def _ordered(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our module order: pos_embed, patch_embed, blocks by index (norm1, attn, norm2, mlp), norm."""
    order = {"norm1": 0, "attn.qkv": 1, "attn.proj": 2, "norm2": 3, "mlp.fc1": 4, "mlp.fc2": 5}

    def key(k: str):
        if k == "pos_embed":
            return (0, 0, 0, k)
        if k.startswith("patch_embed."):
            return (1, 0, 0, k)
        if m := _BLOCK.match(k):
            rest = m.group(2)
            sub = next((v for p, v in order.items() if rest.startswith(p + ".")), 9)
            return (2, int(m.group(1)), sub, "0" if rest.endswith("weight") else "1")
        return (3, 0, 0, k)

    return {k: sd[k] for k in sorted(sd, key=key)}


def hf_config(arch: Mapping[str, Any]) -> dict[str, Any]:
    """IJepaConfig fields (config.json) for an encoder architecture."""
    a = encoder_arch(arch)
    h, w = a["img_size"]
    hidden = int(a["embed_dim"] * a["mlp_ratio"])
    return {
        "architectures": ["IJepaModel"],
        "model_type": "ijepa",
        "image_size": h if h == w else [h, w],
        "patch_size": a["patch_size"],
        "num_channels": 3,
        "hidden_size": a["embed_dim"],
        "num_hidden_layers": a["depth"],
        "num_attention_heads": a["num_heads"],
        "intermediate_size": hidden,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-6,
        "qkv_bias": True,
        "pooler_act": "tanh",
        "pooler_output_size": a["embed_dim"],
        "dtype": "float32",
    }


def arch_from_hf_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Encoder architecture (IJEPA.arch() encoder keys) from an IJepaConfig dict."""
    if cfg.get("model_type") not in (None, "ijepa"):
        raise CheckpointError(f"config.json describes a {cfg.get('model_type')!r} model, not I-JEPA ('ijepa')")
    img = cfg.get("image_size", 224)
    img = [img, img] if isinstance(img, int) else list(img)
    patch = cfg.get("patch_size", 16)
    if not isinstance(patch, int):
        if len(set(patch)) != 1:
            raise CheckpointError(f"non-square patches {patch} are not supported")
        patch = patch[0]
    hidden = int(cfg.get("hidden_size", 768))
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"hidden_act {cfg.get('hidden_act')!r} is not I-JEPA's exact GELU ('gelu')")
    if not cfg.get("qkv_bias", True):
        raise CheckpointError("qkv_bias=False is not supported: I-JEPA encoders have a qkv bias")
    if cfg.get("num_channels", 3) != 3:
        raise CheckpointError(f"num_channels={cfg.get('num_channels')}: openjepa encoders take RGB (3)")
    eps = cfg.get("layer_norm_eps", 1e-12)
    if abs(eps - 1e-6) > 1e-12:
        logger.warning(
            "config.json has layer_norm_eps=%g; openjepa encoders use 1e-6, so features differ "
            "slightly from the Hugging Face model",
            eps,
        )
    return {
        "patch_size": int(patch),
        "img_size": [int(s) for s in img],
        "embed_dim": hidden,
        "depth": int(cfg.get("num_hidden_layers", 12)),
        "num_heads": int(cfg.get("num_attention_heads", 12)),
        "mlp_ratio": int(cfg.get("intermediate_size", 4 * hidden)) / hidden,
    }


def hf_preprocessor_config(arch: Mapping[str, Any]) -> dict[str, Any]:
    """ViTImageProcessor settings: bicubic resize to the encoder's size, ImageNet mean/std."""
    h, w = encoder_arch(arch)["img_size"]
    return {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True,
        "size": {"height": h, "width": w},
        "resample": 3,  # PIL bicubic, as our eval transform
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(IMAGENET_MEAN),
        "image_std": list(IMAGENET_STD),
    }


def is_hf_folder(path: str | Path) -> bool:
    """A folder with a config.json describing an I-JEPA model."""
    p = Path(path)
    cfg = p / CONFIG_NAME
    if not (p.is_dir() and cfg.is_file()):
        return False
    try:
        return json.loads(cfg.read_text()).get("model_type") == "ijepa"
    except (OSError, ValueError):
        return False


def save_hf(
    state_dict: Mapping[str, torch.Tensor],
    arch: Mapping[str, Any],
    folder: str | Path,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write an encoder as a Hugging Face I-JEPA folder; returns the folder.

    `metadata` (str -> str) goes into model.safetensors' header, where openjepa records the
    architecture, which encoder this is and where it came from.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in encoder_to_hf_state_dict(state_dict).items()}
    meta = {"format": "pt", **{str(k): str(v) for k, v in (metadata or {}).items()}}
    save_file(tensors, str(folder / WEIGHTS_NAME), metadata=meta)
    (folder / CONFIG_NAME).write_text(json.dumps(hf_config(arch), indent=2, sort_keys=True) + "\n")
    (folder / PREPROCESSOR_NAME).write_text(json.dumps(hf_preprocessor_config(arch), indent=2) + "\n")
    return folder


def _read_hf_weights(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    def read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})

    if (folder / WEIGHTS_NAME).is_file():
        return read(folder / WEIGHTS_NAME)
    if (folder / WEIGHTS_INDEX_NAME).is_file():
        index = json.loads((folder / WEIGHTS_INDEX_NAME).read_text())
        sd: dict[str, torch.Tensor] = {}
        meta: dict[str, str] = {}
        for shard in sorted(set(index["weight_map"].values())):
            part, m = read(folder / shard)
            sd.update(part)
            meta.update(m)
        return sd, meta
    if (folder / PT_WEIGHTS_NAME).is_file():
        obj = load_torch_file(folder / PT_WEIGHTS_NAME)
        return dict(obj), {}
    raise CheckpointError(f"{folder} has no {WEIGHTS_NAME}, {WEIGHTS_INDEX_NAME} or {PT_WEIGHTS_NAME}")


def load_hf(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, str]]:
    """Read a Hugging Face I-JEPA folder: (our encoder state dict, encoder arch, safetensors metadata)."""
    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file():
        raise CheckpointError(f"{folder} is not a Hugging Face model folder (no {CONFIG_NAME})")
    arch = arch_from_hf_config(json.loads((folder / CONFIG_NAME).read_text()))
    hf_sd, meta = _read_hf_weights(folder)
    return hf_to_encoder_state_dict(hf_sd), arch, meta
