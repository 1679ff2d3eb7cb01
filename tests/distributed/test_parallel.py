"""The single-process pieces of openjepa.train.parallel: EMA arithmetic, activation checkpointing, wrapping."""

from __future__ import annotations

import copy

import torch

from openjepa.core.distributed import DistEnv
from openjepa.train.ema import ema_update_
from openjepa.train.parallel import ema_update_sharded_, enable_activation_checkpointing, full_state_dicts, wrap_model

from . import _worker


def test_sharded_ema_is_the_unsharded_ema_bitwise():
    model = _worker.tiny_model()
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(torch.randn_like(p))
    a, b = copy.deepcopy(model.target_encoder), copy.deepcopy(model.target_encoder)
    for m in (0.996, 0.9991234, 1.0):
        ema_update_(a, model.encoder, m)
        ema_update_sharded_(b, model.encoder, m)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_activation_checkpointing_keeps_names_loss_and_gradients():
    plain, ckpt = _worker.tiny_model(), _worker.tiny_model()
    assert enable_activation_checkpointing(ckpt) == 2 + 2
    assert enable_activation_checkpointing(ckpt) == 4  # idempotent: no double wrapping
    assert list(plain.state_dict()) == list(ckpt.state_dict())
    imgs, me, mp = _worker.fixed_batches(4, 1)[0]
    losses = []
    for model in (plain, ckpt):
        loss = model(imgs, me, mp)
        loss.backward()
        losses.append(loss.detach())
    assert torch.equal(losses[0], losses[1])
    for (n, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        if p.grad is not None:
            assert torch.allclose(p.grad, q.grad, atol=1e-7, rtol=0), n
    with torch.no_grad():  # no gradients: no recomputation wrapper in the way
        assert torch.equal(plain.target_encoder(imgs), ckpt.target_encoder(imgs))


def test_one_process_is_never_wrapped_and_its_state_is_the_plain_state():
    model = _worker.tiny_model()
    assert wrap_model(model, DistEnv(), fsdp=True) is model
    from openjepa.train import make_optimizer

    opt = make_optimizer(model.encoder, model.predictor)
    nets = full_state_dicts(model, opt, DistEnv())
    assert set(nets) == {"encoder", "predictor", "target_encoder", "optimizer"}
    assert full_state_dicts(model, opt, DistEnv(rank=1, world_size=2)) is None
