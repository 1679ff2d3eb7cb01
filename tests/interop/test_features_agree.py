"""Our encoder, transformers' IJepaModel (from our HF export) and timm's ViT (from our timm export)
produce the same tokens and pooled features on the same images."""

from __future__ import annotations

import pytest
import torch

from openjepa.interop import convert, create_timm_model, load_encoder, load_timm, timm_create_args
from tests.interop.conftest import GOLDEN_HEADS, export_safetensors, tiny_encoder

TOL = 1e-4


def _sources(request, tmp_path):
    """(name, safetensors export, images) for the golden tiny weights and locally built tiny ViTs."""
    kind = request.param
    if kind == "golden":
        golden_step = request.getfixturevalue("golden_step")
        ref = tmp_path / "ref.pth.tar"
        torch.save(golden_step["checkpoint_official_format"], ref)
        st = convert(ref, tmp_path / "enc.safetensors", "reference", "safetensors", num_heads=GOLDEN_HEADS)
        return st, golden_step["imgs"]
    if kind == "vit_tiny_width":
        enc = tiny_encoder(seed=1)  # width 192, 3 heads, patch 8 at 32 px
    else:  # giant-like MLP ratio 48/11 with a width that is no preset
        enc = tiny_encoder(seed=2, embed_dim=88, num_heads=4, mlp_ratio=48 / 11, patch_size=4)
    torch.manual_seed(0)
    return export_safetensors(enc, tmp_path / "enc.safetensors"), torch.randn(3, 3, 32, 32)


@pytest.fixture(params=["golden", "vit_tiny_width", "mlp_ratio_48_11"])
def source(request, tmp_path):
    return _sources(request, tmp_path)


def test_features__ours_vs_timm_export(source, tmp_path):
    pytest.importorskip("timm")
    st, imgs = source
    ours = load_encoder(st)
    with torch.no_grad():
        tokens = ours(imgs)
    path = convert(st, tmp_path / "timm.safetensors", "safetensors", "timm")
    sd, _ = load_timm(path)
    model = create_timm_model(ours.meta["arch"]).eval()
    model.load_state_dict(sd, strict=True)  # strict keys: nothing missing, nothing left over
    with torch.no_grad():
        assert (model.forward_features(imgs) - tokens).abs().max() < TOL
        # num_classes=0, global_pool="avg", fc_norm=False: the pooled output is our "avg" feature
        assert (model(imgs) - ours.embed(imgs, progress=False)).abs().max() < TOL
    name, kwargs = timm_create_args(ours.meta["arch"])
    assert kwargs["class_token"] is False and kwargs["fc_norm"] is False and kwargs["global_pool"] == "avg"


def test_features__ours_vs_transformers_ijepa_from_hf_export(source, tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    st, imgs = source
    ours = load_encoder(st)
    with torch.no_grad():
        tokens = ours(imgs)
    folder = convert(st, tmp_path / "hf", "safetensors", "hf")
    model, info = transformers.IJepaModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    model.eval()
    with torch.no_grad():
        hidden = model(pixel_values=imgs).last_hidden_state
    assert hidden.shape == tokens.shape
    assert (hidden - tokens).abs().max() < TOL


def test_timm_export__loads_through_timm_pretrained_file_overlay(tmp_path):
    timm = pytest.importorskip("timm")
    enc = tiny_encoder(seed=3)
    st = export_safetensors(enc, tmp_path / "enc.safetensors")
    path = convert(st, tmp_path / "timm.pth", "safetensors", "timm")
    name, kwargs = timm_create_args(load_encoder(st).meta["arch"])
    kwargs["pretrained"] = True
    model = timm.create_model(name, pretrained_cfg_overlay={"file": str(path)}, **kwargs)
    sd = model.state_dict()
    assert sd.keys() == enc.state_dict().keys()
    assert all(torch.equal(sd[k], v) for k, v in enc.state_dict().items())


@pytest.mark.parametrize(
    "name,patch,img",
    [
        ("vit_tiny", 16, 224),
        ("vit_small", 16, 224),
        ("vit_base", 16, 224),
        ("vit_large", 16, 224),
        ("vit_huge", 14, 224),
        ("vit_huge", 16, 448),
        ("vit_giant", 16, 224),
    ],
)
def test_timm_create_args__every_preset_has_our_keys_shapes_and_heads(name, patch, img):
    timm = pytest.importorskip("timm")
    from openjepa.interop import hf_config
    from openjepa.interop.api import _empty_encoder
    from openjepa.models import ENCODER_SPECS

    spec = ENCODER_SPECS[name]
    arch = {
        "patch_size": patch,
        "img_size": [img, img],
        "embed_dim": spec.embed_dim,
        "depth": spec.depth,
        "num_heads": spec.num_heads,
        "mlp_ratio": spec.mlp_ratio,
    }
    ours = _empty_encoder(arch, {}, 1.0)  # meta device: no memory, no init
    model_name, kwargs = timm_create_args(arch)
    model = timm.create_model(model_name, device="meta", **kwargs)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}
    assert model.blocks[0].attn.num_heads == spec.num_heads
    assert isinstance(model.fc_norm, torch.nn.Identity) and isinstance(model.norm, torch.nn.LayerNorm)
    assert hf_config(arch)["intermediate_size"] == model.blocks[0].mlp.fc1.out_features
