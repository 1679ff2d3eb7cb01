"""Attentive probe: reads which token position carries a signal, where average pooling cannot."""

import torch

from openjepa.evaluate import AttentiveProbe, attentive_probe, linear_probe

from ._synthetic import make_position_task


def test_attentive_probe_shapes_with_several_queries():
    probe = AttentiveProbe(embed_dim=32, num_classes=7, num_heads=4, num_queries=3)
    assert probe(torch.randn(5, 9, 32)).shape == (5, 7)
    assert probe.pool(torch.randn(5, 9, 32)).shape == (5, 3, 32)
    assert AttentiveProbe(768, 10).num_heads == 12  # default head width 64


def test_attention_solves_the_token_position_task_that_average_pooling_cannot():
    xtr, ytr = make_position_task(1000, seed=0)
    xte, yte = make_position_task(400, seed=1)
    att = attentive_probe(xtr, ytr, xte, yte, epochs=20, lr=3e-3, wd=0.05, batch_size=64, seed=0)
    avg = linear_probe(xtr.float().mean(1), ytr, xte.float().mean(1), yte, epochs=30)
    assert att.top1 > 0.9
    assert avg.top1 < 0.4  # chance is 0.25: the token mean carries no class information
    assert (att.n_train, att.n_test) == (1000, 400)
    assert att.to_dict() == {"top1": att.top1, "n_train": 1000, "n_test": 400}  # 4 classes: no top5


def test_attentive_probe_is_deterministic_per_seed():
    xtr, ytr = make_position_task(128, seed=0)
    xte, yte = make_position_task(64, seed=1)
    a = attentive_probe(xtr, ytr, xte, yte, epochs=2, lr=1e-3, wd=0.05, batch_size=32, seed=3)
    b = attentive_probe(xtr, ytr, xte, yte, epochs=2, lr=1e-3, wd=0.05, batch_size=32, seed=3)
    assert a == b
