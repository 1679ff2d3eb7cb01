"""Encoder and predictor: reference state-dict layout, parameter counts, shapes, resolutions, init."""

from __future__ import annotations

import pytest
import torch

from openjepa.models import (
    ENCODER_SPECS,
    VisionTransformer,
    create_encoder,
    create_predictor,
    set_fused_attn,
    sincos_2d,
    vit_predictor,
    vit_tiny,
)
from tests.conftest import strip_module


def _trainable(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def test_param_counts__every_preset_equals_the_reference(golden_stats):
    for key, expected in golden_stats["param_counts_trainable"].items():
        if key.startswith("predictor"):
            continue
        name, rest = key.split("/")
        patch, img = (int(v) for v in rest.split("@"))
        # Count one block and multiply, so ViT-G does not allocate a billion parameters in CI.
        enc = create_encoder(name, patch, img, depth=1)
        block = sum(p.numel() for p in enc.blocks[0].parameters())
        assert _trainable(enc) + block * (ENCODER_SPECS[name].depth - 1) == expected, key


@pytest.mark.parametrize(
    "enc_name, key",
    [
        ("vit_huge", "predictor depth12 dim384 for vit_huge"),
        ("vit_giant", "predictor depth12 dim384 for vit_giant"),
        ("vit_base", "predictor depth6 dim384 for vit_base"),
        ("vit_small", "predictor depth6 dim384 for vit_small"),
    ],
)
def test_param_counts__predictor_equals_the_reference(enc_name, key, golden_stats):
    enc = create_encoder(enc_name, 14, 224, depth=1)
    depth = 12 if "depth12" in key else 6
    assert _trainable(create_predictor(enc, 384, depth)) == golden_stats["param_counts_trainable"][key]


def test_state_dict__reference_checkpoint_loads_strict(golden_step):
    ck = golden_step["checkpoint_official_format"]
    enc = VisionTransformer(img_size=[32], patch_size=4, embed_dim=64, depth=2, num_heads=4)
    enc.load_state_dict(strip_module(ck["encoder"]), strict=True)
    pred = vit_predictor(num_patches=64, embed_dim=64, predictor_embed_dim=32, depth=2, num_heads=4)
    pred.load_state_dict(strip_module(ck["predictor"]), strict=True)
    assert torch.equal(enc.pos_embed, strip_module(ck["encoder"])["pos_embed"])


def test_pos_embed__sincos_table_equals_the_reference_layout(golden_step):
    ck = strip_module(golden_step["checkpoint_official_format"]["encoder"])
    assert torch.equal(sincos_2d(64, 8)[None], ck["pos_embed"])


def test_forward__masks_select_tokens_in_mask_major_order():
    enc = vit_tiny(patch_size=8, img_size=32, depth=2).eval()
    x = torch.randn(3, 3, 32, 32)
    full = enc(x)
    assert full.shape == (3, 16, 192)
    m1, m2 = torch.tensor([[0, 1], [2, 3], [4, 5]]), torch.tensor([[6, 7], [8, 9], [10, 11]])
    out = enc(x, [m1, m2])
    assert out.shape == (6, 2, 192)
    # A single mask given as a tensor works like a one-element list.
    assert torch.allclose(enc(x, m1), out[:3], atol=1e-5)


def test_predictor__one_row_per_target_block_and_blocks_do_not_interact():
    enc = vit_tiny(patch_size=8, img_size=32, depth=1)
    pred = create_predictor(enc, 48, depth=2)
    x = torch.randn(2, 3, 32, 32)
    ctx_mask = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    t1, t2 = torch.tensor([[8, 9], [10, 11]]), torch.tensor([[12, 13], [14, 15]])
    z = enc(x, [ctx_mask])
    both = pred(z, [ctx_mask], [t1, t2])
    assert both.shape == (4, 2, 192)
    assert torch.allclose(both[2:], pred(z, [ctx_mask], [t2]), atol=1e-6)


def test_resolution__other_sizes_recompute_sincos_or_interpolate():
    enc = vit_tiny(patch_size=8, img_size=32, depth=1).eval()
    out = enc(torch.randn(1, 3, 48, 64))
    assert out.shape == (1, 6 * 8, 192)
    enc.pos_embed_resize = "interpolate"
    assert enc(torch.randn(1, 3, 48, 48)).shape == (1, 36, 192)
    with pytest.raises(ValueError, match="multiple of 8"):
        enc(torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match="divisible by patch size"):
        vit_tiny(patch_size=16, img_size=40)


def test_init__reference_mode_has_no_depth_rescale_and_depth_scaled_has():
    torch.manual_seed(0)
    ref = vit_tiny(patch_size=8, img_size=32, depth=8)
    torch.manual_seed(0)
    scaled = vit_tiny(patch_size=8, img_size=32, depth=8, init="depth_scaled")
    for i, (a, b) in enumerate(zip(ref.blocks, scaled.blocks), start=1):
        assert a.attn.proj.weight.std().item() == pytest.approx(0.02, rel=0.1)
        assert torch.allclose(b.attn.proj.weight, a.attn.proj.weight / (2 * i) ** 0.5)
        assert torch.equal(a.attn.qkv.weight, b.attn.qkv.weight)


def test_fused_attention__matches_explicit_softmax_path():
    enc = vit_tiny(patch_size=8, img_size=32, depth=2).eval()
    x = torch.randn(2, 3, 32, 32)
    fused = enc(x)
    set_fused_attn(enc, False)
    assert torch.allclose(fused, enc(x), atol=1e-5)


def test_intermediate_layers__last_layer_equals_forward():
    enc = vit_tiny(patch_size=8, img_size=32, depth=3).eval()
    x = torch.randn(2, 3, 32, 32)
    layers = enc.get_intermediate_layers(x, n=2)
    assert len(layers) == 2 and torch.allclose(layers[-1], enc(x), atol=1e-6)


def test_init__patch_fan_in_scales_only_the_patch_embedding():
    torch.manual_seed(0)
    ref = vit_tiny(patch_size=4, img_size=32, depth=2)
    torch.manual_seed(0)
    fan = vit_tiny(patch_size=4, img_size=32, depth=2, init="patch_fan_in")
    assert ref.patch_embed.proj.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert fan.patch_embed.proj.weight.std().item() == pytest.approx(48**-0.5, rel=0.1)  # fan-in 3 * 4 * 4
    for a, b in zip(ref.blocks.parameters(), fan.blocks.parameters()):
        assert torch.equal(a, b)  # the transformer blocks start where the reference's do
    with pytest.raises(ValueError, match="init must be one of"):
        vit_tiny(patch_size=4, img_size=32, depth=2, init="kaiming")


def test_init__xavier_draws_every_linear_and_the_patch_embedding_at_xavier_scale():
    torch.manual_seed(0)
    enc = vit_tiny(patch_size=4, img_size=32, depth=2, init="xavier")
    fc1 = enc.blocks[0].mlp.fc1.weight  # (768, 192)
    assert fc1.std().item() == pytest.approx((2 / (192 + 768)) ** 0.5, rel=0.05)
    assert fc1.abs().max().item() <= (6 / (192 + 768)) ** 0.5
    patch = enc.patch_embed.proj.weight  # (192, 3, 4, 4): fan-in 48, fan-out 192 as MAE counts them
    assert patch.std().item() == pytest.approx((2 / (48 + 192)) ** 0.5, rel=0.1)
    assert torch.count_nonzero(enc.blocks[0].mlp.fc1.bias) == 0
    assert torch.equal(enc.norm.weight, torch.ones(192))
