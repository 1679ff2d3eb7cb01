"""torch.compile wrapper: equal results, eager fallback with a warning on failure or no speed-up."""

from __future__ import annotations

import copy
import time

import pytest
import torch

from openjepa.train import make_optimizer, train_step
from openjepa.train.compile import CompiledWithFallback, CompileFallbackWarning, compile_with_fallback
from openjepa.train.step import unwrap

from ._util import tiny_batches, tiny_ijepa


def _boom(module):
    def run(*args, **kwargs):
        raise RuntimeError("inductor exploded")

    return run


def test_disabled__returns_the_model_itself():
    m = tiny_ijepa()
    assert compile_with_fallback(m, enabled=False) is m


def test_failure_when_compiling__warns_and_runs_eagerly():
    def fail(module):
        raise RuntimeError("no compiler")

    m = tiny_ijepa()
    with pytest.warns(CompileFallbackWarning, match="no compiler"):
        net = CompiledWithFallback(m, compile_fn=fail)
    assert net.mode == "eager"
    imgs, me, mp = tiny_batches(1)[0]
    assert torch.equal(net(imgs, me, mp), m(imgs, me, mp))


def test_failure_at_the_first_call__warns_once_and_the_step_equals_eager():
    ref = tiny_ijepa()
    m = copy.deepcopy(ref)
    net = CompiledWithFallback(m, compile_fn=_boom)
    batches = tiny_batches(2)
    opt_ref = make_optimizer(ref.encoder, ref.predictor)
    opt = make_optimizer(m.encoder, m.predictor)
    with pytest.warns(CompileFallbackWarning, match="inductor exploded"):
        r = train_step(net, opt, [batches[0]], 1e-3, 0.04, 0.99)
    assert net.mode == "eager" and "RuntimeError" in net.reason
    r_ref = train_step(ref, opt_ref, [batches[0]], 1e-3, 0.04, 0.99)
    assert torch.equal(r.loss, r_ref.loss)
    assert unwrap(net) is m  # EMA and checkpoints reach the IJEPA through the wrapper
    for p, q in zip(m.target_encoder.parameters(), ref.target_encoder.parameters()):
        assert torch.equal(p, q)


def test_not_faster__falls_back_after_the_probe():
    m = tiny_ijepa()

    def slow(module):
        def run(*args, **kwargs):
            time.sleep(0.05)
            return module(*args, **kwargs)

        return run

    net = CompiledWithFallback(m, compile_fn=slow, probe_steps=2, warmup_steps=1)
    imgs, me, mp = tiny_batches(1)[0]
    with pytest.warns(CompileFallbackWarning, match="not faster"):
        for _ in range(1 + 2 * 2 + 1):
            net(imgs, me, mp)
    assert net.mode == "eager"
    assert len(net.probe_times["eager"]) == len(net.probe_times["compiled"]) == 2


def test_faster__stays_compiled(recwarn):
    m = tiny_ijepa()
    real_forward = m.forward
    calls = {"compiled": 0}

    def fast(module):
        def run(*args, **kwargs):
            calls["compiled"] += 1
            return real_forward(*args, **kwargs)

        return run

    def slow_eager(*args, **kwargs):  # the eager module is the slow one here
        time.sleep(0.05)
        return real_forward(*args, **kwargs)

    m.forward = slow_eager
    net = CompiledWithFallback(m, compile_fn=fast, probe_steps=2, warmup_steps=1, calls_per_step=2)
    imgs, me, mp = tiny_batches(1)[0]
    for _ in range(2 * (1 + 2 * 2 + 1)):
        net(imgs, me, mp)
    assert net.mode == "compiled"
    assert not [w for w in recwarn if issubclass(w.category, CompileFallbackWarning)]
    assert calls["compiled"] == 2 * (1 + 2 + 1)  # warm-up, compiled probe steps and after


@pytest.mark.slow
def test_real_torch_compile__equals_eager():
    """Dynamo tracing with the `eager` backend (no C++ build, so it stays quick)."""
    m = tiny_ijepa()
    net = compile_with_fallback(m, backend="eager", dynamic=True)
    imgs, me, mp = tiny_batches(1)[0]
    out = net(imgs, me, mp)
    assert net.mode == "compiled"
    assert (out - m(imgs, me, mp)).abs().max() < 1e-6
