"""Optimizer, EMA and whole-step fast paths against the eager path; no host syncs in the step."""

from __future__ import annotations

import copy
import inspect
from pathlib import Path

import pytest
import torch

import openjepa
from openjepa.models.ijepa import set_fast_paths
from openjepa.train import make_optimizer, train_step
from openjepa.train.ema import ema_update_, ema_update_per_tensor_
from openjepa.train.step import tune_cpu_allocator

from ._util import tiny_batches, tiny_ijepa

PACKAGE_DIR = str(Path(openjepa.__file__).parent)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_states_close(a: dict, b: dict, atol: float = 1e-5) -> None:
    for k in a:
        err = (a[k].float() - b[k].float()).abs().max().item()
        assert err < atol, f"{k}: max abs error {err:.3e}"


def _run(model, optimizer, batches, **kw):
    for i, b in enumerate(batches):
        train_step(model, optimizer, [b], lr=1e-3 * (i + 1), wd=0.04, momentum=0.99, **kw)
    return _state(model)


@pytest.mark.parametrize("kind", ["fused", "foreach"])
def test_fast_adamw__equals_the_for_loop_adamw(kind):
    ref = tiny_ijepa()
    fast = copy.deepcopy(ref)
    batches = tiny_batches(3)
    a = _run(ref, make_optimizer(ref.encoder, ref.predictor, foreach=False), batches)
    opt = make_optimizer(fast.encoder, fast.predictor, **({"fused": True} if kind == "fused" else {"foreach": True}))
    assert opt.defaults["fused" if kind == "fused" else "foreach"]
    b = _run(fast, opt, batches)
    _assert_states_close(a, b)


def test_foreach_ema__equals_the_per_tensor_loop_bitwise():
    m = tiny_ijepa()
    t1, t2 = copy.deepcopy(m.encoder), copy.deepcopy(m.encoder)
    with torch.no_grad():
        for p in m.encoder.parameters():
            p.add_(torch.randn_like(p))
    ema_update_(t1, m.encoder, 0.996)
    ema_update_per_tensor_(t2, m.encoder, 0.996)
    for p, q in zip(t1.parameters(), t2.parameters()):
        assert torch.equal(p, q)


def test_whole_step_fast__equals_whole_step_eager_baseline():
    """Everything the benchmark's fast configuration turns on vs its eager baseline (fp32)."""
    eager = set_fast_paths(tiny_ijepa(), False)
    fast = set_fast_paths(copy.deepcopy(eager), True)
    batches = tiny_batches(3)
    a = _run(
        eager, make_optimizer(eager.encoder, eager.predictor, foreach=False), batches, ema_fn=ema_update_per_tensor_
    )
    b = _run(fast, make_optimizer(fast.encoder, fast.predictor, fused=True), batches, ema_fn=ema_update_)
    _assert_states_close(a, b)


class _SyncRecorder:
    """Records every Tensor -> Python conversion (the calls that wait for the device on a GPU)."""

    METHODS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")

    def __init__(self, monkeypatch):
        self.calls: list[tuple[str, str]] = []
        for name in self.METHODS:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._wrap(name, original))

    def _wrap(self, name, original):
        calls = self.calls

        def wrapper(t, *args, **kwargs):
            caller = inspect.stack(context=0)[1]
            calls.append((name, f"{caller.filename}:{caller.lineno}"))
            return original(t, *args, **kwargs)

        return wrapper


@pytest.mark.parametrize("grad_clip", [None, 1.0])
def test_train_step__never_syncs_with_the_host(monkeypatch, grad_clip):
    """No .item()/bool()/float()/int()/tolist() on a tensor anywhere in the step (fused AdamW)."""
    m = tiny_ijepa()
    opt = make_optimizer(m.encoder, m.predictor, fused=True)
    batches = tiny_batches(2)
    train_step(m, opt, [batches[0]], 1e-3, 0.04, 0.99)  # optimizer state created outside the check
    rec = _SyncRecorder(monkeypatch)
    result = train_step(m, opt, [batches[1], batches[0]], 1e-3, 0.04, 0.99, grad_clip=grad_clip)
    assert rec.calls == []
    assert isinstance(result.loss, torch.Tensor)


def test_train_step__our_code_never_syncs_even_with_the_for_loop_adamw(monkeypatch):
    """torch's non-fused AdamW reads its step counters (CPU tensors even on GPU); openjepa reads nothing."""
    m = tiny_ijepa()
    opt = make_optimizer(m.encoder, m.predictor, foreach=False)
    batches = tiny_batches(1)
    rec = _SyncRecorder(monkeypatch)
    train_step(m, opt, batches, 1e-3, 0.04, 0.99, grad_clip=1.0)
    ours = [c for c in rec.calls if c[1].startswith(PACKAGE_DIR)]
    assert ours == []


def test_train_step__skip_nonfinite_is_the_one_opt_in_sync(monkeypatch):
    m = tiny_ijepa()
    opt = make_optimizer(m.encoder, m.predictor, fused=True)
    batches = tiny_batches(1)
    rec = _SyncRecorder(monkeypatch)
    train_step(m, opt, batches, 1e-3, 0.04, 0.99, skip_nonfinite=True)
    ours = [c for c in rec.calls if c[1].startswith(PACKAGE_DIR)]
    assert [c[0] for c in ours] == ["__bool__"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: CUDA sync debug mode")
def test_train_step__no_device_sync_on_cuda():
    m = tiny_ijepa().cuda()
    opt = make_optimizer(m.encoder, m.predictor, fused=True)
    batches = [(x.cuda(), [t.cuda() for t in me], [t.cuda() for t in mp]) for x, me, mp in tiny_batches(2)]
    train_step(m, opt, [batches[0]], 1e-3, 0.04, 0.99)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        train_step(m, opt, [batches[1]], 1e-3, 0.04, 0.99, grad_clip=1.0, amp_dtype=torch.bfloat16)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_tune_cpu_allocator__applies_and_changes_no_result():
    a = tiny_ijepa()
    b = copy.deepcopy(a)
    batches = tiny_batches(2)
    ra = _run(a, make_optimizer(a.encoder, a.predictor), batches)
    try:
        assert tune_cpu_allocator()
        rb = _run(b, make_optimizer(b.encoder, b.predictor), batches)
    finally:
        assert tune_cpu_allocator(False)
    for k in ra:
        assert torch.equal(ra[k], rb[k])


def test_attention_context__cuda_excludes_cudnn_sdpa_and_restores_it():
    from openjepa.train.step import attention_context

    before = torch.backends.cuda.cudnn_sdp_enabled()
    with attention_context("cuda"):  # sets the backend flags; needs no GPU to check them
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
    assert torch.backends.cuda.cudnn_sdp_enabled() == before
    with attention_context("cpu"):  # CPU steps are untouched (the golden parity path)
        assert torch.backends.cuda.cudnn_sdp_enabled() == before
