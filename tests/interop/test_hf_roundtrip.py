"""Hugging Face folders: file contents, and golden -> ours -> HF -> ours -> reference bit-exactness."""

from __future__ import annotations

import json

import pytest
import torch

from openjepa.core.checkpoint import load_checkpoint
from openjepa.interop import convert, hf_to_encoder_state_dict, load_hf
from tests.interop.conftest import GOLDEN_HEADS, export_safetensors, same_state, tiny_encoder


@pytest.mark.parametrize("which,slot", [("target", "target_encoder"), ("context", "encoder")])
def test_golden_to_ours_to_hf_to_ours_to_reference__bit_identical(golden_ref, golden_ref_file, tmp_path, which, slot):
    ours = convert(golden_ref_file, tmp_path / "ours.pt", "reference", "openjepa", num_heads=GOLDEN_HEADS)
    hf = convert(ours, tmp_path / "hf", "openjepa", "hf", which=which)
    ours2 = convert(hf, tmp_path / "ours2.pt", "hf", "openjepa", encoder_only=True)
    ref = torch.load(
        convert(ours2, tmp_path / "ref.pth.tar", "openjepa", "reference", encoder_only=True), weights_only=True
    )
    # HF carries one encoder: the one asked for comes back bit for bit, in both encoder slots
    assert same_state(ref[slot], golden_ref[slot])
    assert same_state(ref["encoder"], ref["target_encoder"])
    assert load_checkpoint(ours2)["which"] == which
    # the predictor survives where the format carries it (ours <-> reference)
    full = torch.load(convert(ours, tmp_path / "full.pth.tar", "openjepa", "reference"), weights_only=True)
    for net in ("encoder", "predictor", "target_encoder"):
        assert same_state(full[net], golden_ref[net]), net


def test_hf_folder__config_preprocessor_and_weights(golden_ref_file, tmp_path):
    folder = convert(golden_ref_file, tmp_path / "hf", "reference", "hf", num_heads=GOLDEN_HEADS)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == "ijepa" and cfg["architectures"] == ["IJepaModel"]
    assert {
        k: cfg[k]
        for k in (
            "image_size",
            "patch_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "layer_norm_eps",
            "qkv_bias",
            "hidden_act",
        )
    } == {
        "image_size": 32,
        "patch_size": 4,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 256,
        "layer_norm_eps": 1e-6,
        "qkv_bias": True,
        "hidden_act": "gelu",
    }
    pre = json.loads((folder / "preprocessor_config.json").read_text())
    assert pre["image_processor_type"] == "ViTImageProcessor"
    assert pre["size"] == {"height": 32, "width": 32}
    assert pre["image_mean"] == [0.485, 0.456, 0.406] and pre["image_std"] == [0.229, 0.224, 0.225]
    sd, arch, meta = load_hf(folder)
    assert meta["which"] == "target" and arch["num_heads"] == 4
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    assert "encoder.layer.0.attention.attention.query.weight" in keys and "layernorm.weight" in keys
    assert not any("qkv" in k for k in keys)


def test_hf_import__accepts_transformers5_module_names(tmp_path):
    transformers = pytest.importorskip("transformers")
    enc = tiny_encoder()
    hf = convert(export_safetensors(enc, tmp_path / "e.safetensors"), tmp_path / "hf", "safetensors", "hf")
    model = transformers.IJepaModel.from_pretrained(hf)
    sd = hf_to_encoder_state_dict(model.state_dict())  # live module names (layers.N.attention.q_proj ...)
    assert same_state(sd, enc.state_dict())
