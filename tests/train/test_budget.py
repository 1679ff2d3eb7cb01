"""Budget sizing: step timing over independent mask draws, epochs sized to the minutes."""

from __future__ import annotations

import pytest

from openjepa.train.budget import budgeted_config, seconds_per_step, timing_batches

from .test_loop import TINY, tiny_cfg


def test_timing_batches__each_batch_draws_its_own_masks(tmp_path):
    # 16x16 grid: the context is cut to the batch minimum, so its length varies between draws
    cfg = tiny_cfg(tmp_path, "data.crop_size=64", "data.batch_size=8")
    batches = timing_batches(cfg, 6)
    assert len(batches) == 6 and all(b[0][0].shape[0] == 8 for b in batches)
    contexts = [b[1][0] for b in batches]
    assert len({tuple(c.flatten().tolist()) for c in contexts}) == 6  # no draw repeated
    assert len({c.shape[1] for c in contexts}) > 1  # their cost differs: timing one draw is biased


def test_seconds_per_step__positive_and_budget_sizes_epochs_to_minutes(tmp_path, monkeypatch):
    cfg = tiny_cfg(tmp_path)
    assert 0 < seconds_per_step(cfg, steps=2) < 60
    monkeypatch.setattr("openjepa.train.budget.seconds_per_step", lambda cfg: 0.5)
    over = [*TINY, "data.dataset=shapes:24", f"logging.folder={tmp_path / 'run'}"]
    # 24 images / batch 4 = 6 steps per epoch at 0.5 s: 1 minute holds 120 steps = 20 epochs
    cfg, step_s = budgeted_config(None, over, minutes=1.0)
    assert step_s == 0.5 and cfg.optimization.epochs == 20 and cfg.optimization.warmup == 2
    assert cfg.optimization.max_minutes == pytest.approx(1.0)
    cfg, _ = budgeted_config(None, over, minutes=0.01)  # too short: the minimum schedule, still capped
    assert cfg.optimization.epochs == 2 and cfg.optimization.max_minutes == pytest.approx(0.01)
