"""The reference `.pth.tar` format: loading, architecture inference and exact round trips."""

from __future__ import annotations

import pytest
import torch

from openjepa.config import config_from_dict
from openjepa.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from openjepa.interop import (
    convert,
    from_reference_checkpoint,
    infer_encoder_arch,
    infer_predictor_arch,
    load_reference_checkpoint,
    to_reference_checkpoint,
)
from openjepa.interop.reference import REFERENCE_KEYS
from openjepa.models import IJEPA
from openjepa.train import make_optimizer
from tests.conftest import strip_module
from tests.interop.conftest import GOLDEN_HEADS, same_state, tiny_encoder


def test_load_reference_checkpoint__strips_module_prefix_from_path_and_dict(golden_ref, golden_ref_file):
    for src in (golden_ref_file, golden_ref):
        ref = load_reference_checkpoint(src)
        for net in ("encoder", "predictor", "target_encoder"):
            assert not any(k.startswith("module.") for k in ref[net])
            assert same_state(ref[net], strip_module(golden_ref[net]))
        assert ref["epoch"] == golden_ref["epoch"] and ref["lr"] == golden_ref["lr"]


def test_infer_encoder_arch__golden_tiny_shapes(golden_ref):
    arch = infer_encoder_arch(golden_ref["target_encoder"], num_heads=GOLDEN_HEADS)
    assert arch == {
        "patch_size": 4,
        "img_size": [32, 32],
        "embed_dim": 64,
        "depth": 2,
        "num_heads": 4,
        "mlp_ratio": 4.0,
    }
    pred = infer_predictor_arch(golden_ref["predictor"], arch)
    assert (pred["pred_depth"], pred["pred_emb_dim"], pred["predictor_heads"]) == (2, 32, 4)
    assert pred["target_type"] == "representation"


def test_infer_encoder_arch__unknown_width_without_heads_asks_for_num_heads(golden_ref):
    with pytest.raises(CheckpointError, match="--num-heads"):
        infer_encoder_arch(golden_ref["target_encoder"])


def test_infer_encoder_arch__preset_width_gives_heads_and_model_name_overrides():
    sd = tiny_encoder(embed_dim=384, num_heads=6).state_dict()  # vit_small width
    assert infer_encoder_arch(sd)["num_heads"] == 6
    assert infer_encoder_arch(sd, num_heads=12)["num_heads"] == 12
    sd = tiny_encoder(embed_dim=1408, depth=1, num_heads=16, mlp_ratio=48 / 11).state_dict()  # vit_giant width
    arch = infer_encoder_arch(sd)
    assert arch["num_heads"] == 16 and int(arch["embed_dim"] * arch["mlp_ratio"]) == 6144


def test_infer_encoder_arch__whole_checkpoint_is_refused_with_a_hint(golden_ref):
    with pytest.raises(CheckpointError, match="target_encoder"):
        infer_encoder_arch(golden_ref, num_heads=4)


def test_to_reference_checkpoint__exact_reference_layout(golden_ref):
    ours = from_reference_checkpoint(golden_ref, num_heads=GOLDEN_HEADS)
    ref = to_reference_checkpoint(ours)
    assert list(ref) == list(REFERENCE_KEYS)
    for net in ("encoder", "predictor", "target_encoder"):
        assert all(k.startswith("module.") for k in ref[net])
    assert ref["opt"] is None and ref["scaler"] is None  # the golden file carries neither


def test_reference_to_openjepa_to_reference__bit_identical(golden_ref, golden_ref_file, tmp_path):
    ours = convert(golden_ref_file, tmp_path / "ours.pt", "reference", "openjepa", num_heads=GOLDEN_HEADS)
    state = load_checkpoint(ours)
    assert state["format"] == "openjepa" and state["arch"]["pred_emb_dim"] == 32
    IJEPA.from_arch(state["arch"])  # the stored arch rebuilds the networks
    cfg = config_from_dict(state["config"], check=False)  # partial config: only keys known from the file
    assert (cfg.mask.patch_size, cfg.data.crop_size, cfg.data.batch_size) == (4, 32, 4)
    back = convert(ours, tmp_path / "back.pth.tar", "openjepa", "reference")
    ref = torch.load(back, weights_only=True)
    for net in ("encoder", "predictor", "target_encoder"):
        assert same_state(ref[net], golden_ref[net]), net
    for k in ("epoch", "loss", "batch_size", "world_size", "lr"):
        assert ref[k] == golden_ref[k], k


def _run_checkpoint(golden_step, folder):
    """One of our run checkpoints with all three networks and a populated optimizer state."""
    ref = load_reference_checkpoint(golden_step["checkpoint_official_format"])
    arch = from_reference_checkpoint(ref, num_heads=GOLDEN_HEADS)["arch"]
    model = IJEPA.from_arch(arch)
    for net in ("encoder", "predictor", "target_encoder"):
        getattr(model, net).load_state_dict(ref[net])
    opt = make_optimizer(model.encoder, model.predictor)
    loss = model(golden_step["imgs"], golden_step["masks_enc"], golden_step["masks_pred"])
    loss.backward()
    opt.step()
    state = {
        "config": {"data": {"batch_size": 4}, "optimization": {"lr": 1e-3}},
        "arch": model.arch(),
        "encoder": model.encoder.state_dict(),
        "predictor": model.predictor.state_dict(),
        "target_encoder": model.target_encoder.state_dict(),
        "optimizer": opt.state_dict(),
        "step": 7,
        "epoch": 3,
    }
    return save_checkpoint(state, folder, step=7)


def test_openjepa_to_reference_to_openjepa__keeps_three_networks_and_optimizer(golden_step, tmp_path):
    src = _run_checkpoint(golden_step, tmp_path / "run")
    orig = load_checkpoint(src)
    ref_path = convert(src, tmp_path / "ref.pth.tar", "openjepa", "reference")
    ref = torch.load(ref_path, weights_only=True)
    assert ref["epoch"] == 3 and ref["batch_size"] == 4 and ref["lr"] == 1e-3 and ref["opt"] is not None
    back = load_checkpoint(convert(ref_path, tmp_path / "back.pt", "reference", "openjepa", num_heads=GOLDEN_HEADS))
    for net in ("encoder", "predictor", "target_encoder"):
        assert same_state(back[net], orig[net]), net
    assert not same_state(back["encoder"], back["target_encoder"])
    assert back["arch"] == orig["arch"] and back["epoch"] == 3
    o1, o2 = orig["optimizer"], back["optimizer"]
    assert o1["param_groups"] == o2["param_groups"]
    for i, s in o1["state"].items():
        assert all(torch.equal(v, o2["state"][i][k]) for k, v in s.items())
    # the whole run folder is accepted too (its newest checkpoint)
    assert same_state(
        load_checkpoint(convert(tmp_path / "run", tmp_path / "b2.pt", None, "openjepa"))["encoder"], orig["encoder"]
    )


def test_encoder_only_source_to_training_formats__says_predictor_is_missing(golden_ref_file, tmp_path):
    st = convert(golden_ref_file, tmp_path / "enc.safetensors", "reference", "safetensors", num_heads=GOLDEN_HEADS)
    for fmt in ("reference", "openjepa"):
        with pytest.raises(CheckpointError, match="predictor.*--encoder-only"):
            convert(st, tmp_path / f"x.{fmt}", "safetensors", fmt)
    out = convert(st, tmp_path / "eval.pth.tar", "safetensors", "reference", encoder_only=True)
    ref = torch.load(out, weights_only=True)
    assert "predictor" not in ref and same_state(ref["encoder"], ref["target_encoder"])
