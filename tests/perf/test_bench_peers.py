"""bench/peers.py: lightly's encoder as the probes see it, lightly's one-patch token offset, a budgeted run."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from openjepa.models.pooling import pool_features

from .test_bench_quality import _tiny_npz

pytest.importorskip("lightly")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import peers  # noqa: E402  # bench/ is a folder of scripts, not a package

# one context block and one target block per image, on the 8x8 grid: index 0 is the top-left patch,
# 8, 16 and 24 start a row (lightly's offset moves them to the end of the row above)
MASKS_ENC = [torch.tensor([[0, 1, 8, 9, 16], [2, 3, 10, 11, 24]])]
MASKS_PRED = [torch.tensor([[40, 41, 48], [42, 43, 50]])]


def _gather(tokens: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """tokens (B, N, D), idx (B, K) -> (B, K, D)."""
    return torch.gather(tokens, 1, idx.unsqueeze(-1).expand(-1, -1, tokens.size(-1)))


@pytest.fixture(scope="module")
def nets() -> tuple[torch.nn.Module, torch.nn.Module]:
    backbone, predictor = peers.build_lightly(0)
    return backbone.eval(), predictor.eval()


def test_adapter__patch_tokens_and_intermediate_layers_match_lightly(nets):
    backbone, _ = nets
    enc = peers.LightlyEncoder(backbone)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = enc(x)
        layers = enc.get_intermediate_layers(x, 4)
        full = backbone.encode(x)  # lightly's own pass: (B, 1 + 64, D), class token first
    assert out.shape == (2, 64, 192) and enc.img_size == (32, 32)
    assert len(enc.blocks) == 6 and len(layers) == 4 and all(t.shape == (2, 64, 192) for t in layers)
    torch.testing.assert_close(layers[-1], out)
    torch.testing.assert_close(out, full[:, 1:])  # the class token is what the adapter drops
    assert not torch.allclose(layers[0], layers[-1])
    assert pool_features(enc, x, "avg_last4").shape == (2, 4 * 192)


@pytest.mark.parametrize("variant", ["lightly", "lightly-fixed"])
def test_offset__context_and_target_tokens_are_the_masked_patches_only_when_fixed(nets, variant):
    backbone, predictor = nets
    target = backbone  # the target encoder starts as a copy; the same weights show the same gather
    assert predictor.predictor_pos_embed.shape[1] == 64  # the predictor's positions have no class token
    x = torch.randn(2, 3, 32, 32)
    seq = backbone.images_to_tokens(x, prepend_class_token=True) + backbone.encoder.pos_embedding  # (B, 65, D)
    kept: list[torch.Tensor] = []
    hook = backbone.encoder.layers.register_forward_pre_hook(lambda _m, args: kept.append(args[0].detach()))
    try:
        with torch.no_grad():
            pred = peers.forward_context(backbone, predictor, x, MASKS_ENC, MASKS_PRED, peers.VARIANTS[variant])
            h = peers.forward_target(target, x, MASKS_ENC, MASKS_PRED, peers.VARIANTS[variant])
            out = F.layer_norm(backbone.encode(x), (192,))  # (B, 65, D) normed target tokens
    finally:
        hook.remove()
    assert pred.shape == h.shape == (2, 3, 192)
    context = kept[0]  # the tokens the context encoder's blocks receive, (B, 5, D)
    on_patches, on_sequence = _gather(seq[:, 1:], MASKS_ENC[0]), _gather(seq, MASKS_ENC[0])
    if variant == "lightly-fixed":
        torch.testing.assert_close(context, on_patches)
        torch.testing.assert_close(h, _gather(out[:, 1:], MASKS_PRED[0]))
        return
    # as shipped: grid index i lands on sequence token i, i.e. patch i - 1 (index 0: the class token)
    torch.testing.assert_close(context, on_sequence)
    torch.testing.assert_close(context[0, 0], seq[0, 0])  # grid (0, 0) -> the class token
    torch.testing.assert_close(context[0, 4], seq[0, 1 + 15])  # grid (2, 0) -> patch (1, 7)
    assert not torch.allclose(context, on_patches)
    torch.testing.assert_close(h, _gather(out, MASKS_PRED[0]))
    assert not torch.allclose(h, _gather(out[:, 1:], MASKS_PRED[0]))


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["lightly", "lightly-fixed"])
def test_train_lightly__a_few_seconds_run_steps_with_a_finite_loss(tmp_path, variant):
    data = _tiny_npz(tmp_path / "tiny.npz")
    cfg = peers.recipe_config(str(data), 0, ["data.batch_size=16", "data.num_workers=0"])
    run = peers.train_lightly(variant, cfg, 2.0, seed=0)
    assert run["steps"] >= 1 and math.isfinite(run["last_loss"])
    assert run["settings"]["index_offset"] == peers.VARIANTS[variant] and run["settings"]["batch_size"] == 16
    assert run["settings"]["collator"]["pred_mask_scale"] == (0.2, 0.8)  # lightly's defaults, recorded
    with torch.no_grad():
        assert run["encoder"](torch.randn(1, 3, 32, 32)).shape == (1, 64, 192)
