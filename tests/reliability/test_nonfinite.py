"""Non-finite losses: skip mode (skip, count, log, continue with finite parameters, capped), gradient
clipping and loss-spike warnings. Stop mode (the default) is tested in tests/train/test_loop.py::
test_fit__non_finite_loss_stops_naming_the_step_and_the_last_checkpoint; here only its one-line form."""

from __future__ import annotations

import logging
import math

import pytest
import torch

import openjepa.train.guards as guards
import openjepa.train.loop as loop
from openjepa.core.checkpoint import list_checkpoints, load_checkpoint
from openjepa.models.ijepa import IJEPA
from openjepa.train import make_optimizer, train_step
from openjepa.train.loop import NonFiniteLossError, fit

from ._tiny import TOTAL_STEPS, losses, params, same_params, tiny_cfg


def _poison_forward(monkeypatch, bad_calls, factor=float("nan")):
    """Multiply the loss of the given (1-based) forward calls by `factor`; one forward per step here."""
    calls = {"n": 0}
    original = IJEPA.forward

    def poisoned(self, *args):
        calls["n"] += 1
        loss = original(self, *args)
        return loss * factor if bad_calls(calls["n"]) else loss

    monkeypatch.setattr(IJEPA, "forward", poisoned)


def test_stop_mode__error_is_one_line_and_no_nonfinite_checkpoint_is_written(tmp_path, monkeypatch):
    _poison_forward(monkeypatch, lambda n: n >= 3)
    with pytest.raises(NonFiniteLossError) as e:
        fit(tiny_cfg(tmp_path / "run"), progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "step 3" in msg and "ckpt-step00000002.pt" in msg
    assert "optimization.on_nonfinite=skip" in msg  # names the fix
    state = load_checkpoint(list_checkpoints(tmp_path / "run")[-1][1])
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["encoder"].values())


def test_skip_mode__skips_counts_and_logs_the_steps_and_training_continues_finite(tmp_path, monkeypatch, caplog):
    _poison_forward(monkeypatch, lambda n: n in (5, 6))  # steps 5 and 6 (6 ends epoch 1)
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="openjepa.train"):
        result = fit(tiny_cfg(run, "optimization.on_nonfinite=skip", "logging.keep_last=10"), progress=False)
    assert result.steps == TOTAL_STEPS and result.stop_reason == "completed"
    assert result.skipped_steps == 2 and math.isfinite(result.last_loss)
    assert any("skipped step(s) 5, 6" in r.getMessage() for r in caplog.records), caplog.text
    # the skipped steps changed nothing: parameters and optimizer state at step 6 equal those at step 4
    assert not same_params(params(run / "ckpt-step00000004.pt"), params(run / "ckpt-step00000006.pt"))
    opt4 = load_checkpoint(run / "ckpt-step00000004.pt")["optimizer"]["state"]
    opt6 = load_checkpoint(run / "ckpt-step00000006.pt")["optimizer"]["state"]
    assert all(torch.equal(opt4[i]["exp_avg"], opt6[i]["exp_avg"]) for i in opt4)
    # ...and training went on afterwards, with finite parameters
    final = params(run)
    assert same_params(params(run / "ckpt-step00000006.pt"), final)
    assert all(torch.isfinite(v).all() for v in final.values())
    logged = dict(losses(run))
    assert logged[5] == "nan" and logged[6] == "nan" and math.isfinite(float(logged[7]))
    assert load_checkpoint(run / "ckpt-step00000012.pt")["skipped_steps"] == 2  # survives a resume


def test_skip_mode__stops_after_too_many_non_finite_steps_in_a_row(tmp_path, monkeypatch):
    monkeypatch.setattr(guards, "MAX_CONSECUTIVE_SKIPS", 4)
    _poison_forward(monkeypatch, lambda n: n >= 3)
    with pytest.raises(NonFiniteLossError, match=r"4 steps in a row up to step 6 .*ckpt-step00000004.pt"):
        fit(tiny_cfg(tmp_path / "run", "optimization.on_nonfinite=skip"), progress=False)
    # step 4's checkpoint is good: the skipped steps 3-4 left the model exactly as step 2 had it
    run = tmp_path / "run"
    assert not same_params(params(run / "ckpt-step00000002.pt"), params(run / "ckpt-step00000004.pt"))


def test_gradient_clipping__bounds_the_gradient_the_optimizer_uses(monkeypatch):
    torch.manual_seed(0)
    model = IJEPA.build("vit_tiny", 8, 32, pred_depth=1, pred_emb_dim=48, depth=1)
    opt = make_optimizer(model.encoder, model.predictor)
    seen = []
    opt.register_step_pre_hook(
        lambda o, a, k: seen.append(
            torch.nn.utils.get_total_norm(
                [p.grad for g in o.param_groups for p in g["params"] if p.grad is not None]
            ).item()
        )
    )
    imgs = torch.randn(4, 3, 32, 32) * 100  # large inputs, large gradients
    batch = [(imgs, [torch.tensor([[0, 1, 2, 4, 5, 6]] * 4)], [torch.tensor([[10, 11]] * 4)])]
    clip = 1e-3
    r = train_step(model, opt, batch, lr=1e-3, wd=0.04, momentum=0.99, grad_clip=clip)
    assert r.grad_norm.item() > 10 * clip  # the raw gradient was larger...
    assert seen[0] <= clip * (1 + 1e-4)  # ...but the optimizer only saw the clipped one
    exp_avg = [s["exp_avg"] for s in opt.state.values()]
    assert torch.nn.utils.get_total_norm(exp_avg).item() <= 0.1 * clip * (1 + 1e-4)  # (1 - beta1) * g


def test_gradient_clipping__is_applied_by_fit(tmp_path, monkeypatch):
    seen = []
    original = loop.train_step

    def spy(*args, **kwargs):
        seen.append(kwargs["grad_clip"])
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", spy)
    fit(tiny_cfg(tmp_path / "run", "optimization.grad_clip=0.5", "optimization.max_steps=2"), progress=False)
    assert seen == [0.5, 0.5]


def test_loss_spike__logs_a_warning_naming_the_step(tmp_path, monkeypatch, caplog):
    _poison_forward(monkeypatch, lambda n: n == 23, factor=50.0)  # 22 steps of history first
    with caplog.at_level(logging.WARNING, logger="openjepa.train"):
        fit(tiny_cfg(tmp_path / "run", "optimization.epochs=4"), progress=False)
    spikes = [r.getMessage() for r in caplog.records if "loss spike" in r.getMessage()]
    assert len(spikes) == 1 and spikes[0].startswith("loss spike at step 23:"), spikes
