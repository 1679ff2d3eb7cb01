"""The exact model fast paths give the plain eager results (fp32, within 1e-5)."""

from __future__ import annotations

import copy

import pytest
import torch

from openjepa.models import set_fused_attn
from openjepa.models.ijepa import set_fast_paths
from openjepa.models.vision_transformer import block_forward_shared_prefix, block_forward_tail

from ._util import assert_close_dicts, grads, tiny_batches, tiny_ijepa


def _predict_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    imgs, me, mp = batch
    out = model.predict(imgs, me, mp)
    (out.square().mean() + out.mean()).backward()
    return out.detach(), grads(model)


@pytest.mark.parametrize("fused", [True, False])
def test_block_tail_and_shared_prefix__equal_the_full_block(fused):
    torch.manual_seed(0)
    blk = tiny_ijepa().predictor.predictor_blocks[0]
    set_fused_attn(blk, fused)
    prefix, rest = torch.randn(2, 5, 48), torch.randn(6, 3, 48)
    full = blk(torch.cat([prefix.repeat(3, 1, 1), rest], dim=1))
    assert (block_forward_shared_prefix(blk, prefix, rest, 3) - full).abs().max() < 1e-5
    x = torch.randn(4, 9, 48)
    assert (block_forward_tail(blk, x, 6) - blk(x)[:, 6:]).abs().max() < 1e-5


@pytest.mark.parametrize("nenc,pred_depth", [(1, 3), (2, 2), (1, 1)])
def test_predictor_fast_path__outputs_and_gradients_equal_the_plain_path(nenc, pred_depth):
    fast = tiny_ijepa(pred_depth=pred_depth)
    plain = copy.deepcopy(fast)
    plain.predictor.fast_path = False
    batch = tiny_batches(1, nenc=nenc)[0]
    out_f, g_f = _predict_and_grads(fast, batch)
    out_p, g_p = _predict_and_grads(plain, batch)
    assert out_f.shape == out_p.shape == (4 * nenc * 3, batch[2][0].shape[1], 48)
    assert (out_f - out_p).abs().max() < 1e-5
    assert_close_dicts(g_f, g_p)


def test_predictor_fast_path__falls_back_with_dropout_in_training():
    fast = tiny_ijepa()
    for m in fast.predictor.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.1
    imgs, me, mp = tiny_batches(1)[0]
    z = fast.encoder(imgs, me)
    torch.manual_seed(3)
    a = fast.predictor(z, me, mp)
    fast.predictor.fast_path = False
    torch.manual_seed(3)
    b = fast.predictor(z, me, mp)
    assert torch.equal(a, b)  # same RNG use: the plain path ran both times


def test_one_predictor_call_per_block__equals_the_batched_call():
    batched = tiny_ijepa()
    per_block = copy.deepcopy(batched)
    per_block.predictor_per_block = True
    batch = tiny_batches(1)[0]
    out_b, g_b = _predict_and_grads(batched, batch)
    out_p, g_p = _predict_and_grads(per_block, batch)
    assert (out_b - out_p).abs().max() < 1e-5
    assert_close_dicts(g_b, g_p)


def test_sdpa_attention__equals_explicit_softmax_attention():
    sdpa = tiny_ijepa()
    assert all(m.fused_attn for m in sdpa.modules() if hasattr(m, "qkv"))  # timm's default: SDPA
    explicit = set_fused_attn(copy.deepcopy(sdpa), False)
    batch = tiny_batches(1)[0]
    out_s, g_s = _predict_and_grads(sdpa, batch)
    out_e, g_e = _predict_and_grads(explicit, batch)
    assert (out_s - out_e).abs().max() < 1e-5
    assert_close_dicts(g_s, g_e)


def test_all_model_fast_paths_on__equal_all_off():
    fast = set_fast_paths(tiny_ijepa(), True)
    plain = set_fast_paths(copy.deepcopy(fast), False)
    assert plain.predictor_per_block and not plain.predictor.fast_path
    assert plain.target_encoder.cpu_chunk_bytes is None and fast.target_encoder.cpu_chunk_bytes
    imgs, me, mp = tiny_batches(1)[0]
    for m in (fast, plain):
        m.zero_grad(set_to_none=True)
        m(imgs, me, mp).backward()
    assert abs(fast(imgs, me, mp).item() - plain(imgs, me, mp).item()) < 1e-6
    assert_close_dicts(grads(fast), grads(plain))


def test_encoder_tokens__are_contiguous_and_unchanged_by_it():
    enc = tiny_ijepa().encoder.eval()
    x = torch.randn(2, 3, 32, 32)
    tokens = enc.prepare_tokens(x)
    assert tokens.is_contiguous()
    strided = enc.patch_embed(x) + enc.pos_embed  # the transposed layout the conv gives
    assert not strided.is_contiguous()
    assert torch.equal(tokens, strided)


def test_channels_last_images__give_the_same_features():
    enc = tiny_ijepa().encoder.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a = enc(x)
        b = enc(x.contiguous(memory_format=torch.channels_last))
    assert (a - b).abs().max() < 1e-5


def test_chunked_cpu_inference__equals_one_pass():
    enc = tiny_ijepa().encoder.eval()
    x = torch.randn(9, 3, 32, 32)
    with torch.no_grad():
        enc.cpu_chunk_bytes = None
        whole = enc(x)
        enc.cpu_chunk_bytes = 4 * 64 * 192 * 4  # 4 images of 64 tokens with a 192-wide MLP per chunk
        assert enc.inference_chunk(x) == 4
        chunked = enc(x)
    assert (chunked - whole).abs().max() < 1e-5
    assert enc(x[:2]).requires_grad  # with gradients on, never chunked: one autograd graph
