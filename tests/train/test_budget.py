"""Budget sizing: step timing over the real data loader, the schedule sized in steps to the minutes."""

from __future__ import annotations

import time

import pytest

from openjepa.data import build as data_build
from openjepa.train import Schedule
from openjepa.train.budget import budgeted_config, seconds_per_step, timing_batches
from openjepa.train.loop import fit

from .test_loop import TINY, tiny_cfg


def test_timing_batches__each_batch_draws_its_own_masks(tmp_path):
    # 16x16 grid: the context is cut to the batch minimum, so its length varies between draws
    cfg = tiny_cfg(tmp_path, "data.crop_size=64", "data.batch_size=8")
    batches = list(timing_batches(cfg, 6))  # 24 images = 3 batches: the second epoch supplies the rest
    assert len(batches) == 6 and all(b[0][0].shape[0] == 8 for b in batches)
    contexts = [b[1][0] for b in batches]
    assert len({tuple(c.flatten().tolist()) for c in contexts}) == 6  # no draw repeated
    assert len({c.shape[1] for c in contexts}) > 1  # their cost differs: timing one draw is biased


class _SlowImages:
    """A dataset whose every image costs `delay` seconds to load."""

    def __init__(self, base, delay: float) -> None:
        self.base, self.delay = base, delay

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __getitem__(self, i):
        time.sleep(self.delay)
        return self.base[i]


@pytest.mark.parametrize("accum", [1, 2])
def test_seconds_per_step__counts_the_data_pipeline_and_accumulation(tmp_path, monkeypatch, accum):
    # in-process loading (no workers): each step waits for its accum x 4 images, so the estimate includes them
    build = data_build.build_train_dataset
    monkeypatch.setattr(data_build, "build_train_dataset", lambda cfg: _SlowImages(build(cfg), 0.03))
    cfg = tiny_cfg(tmp_path, f"optimization.accum_steps={accum}")
    assert seconds_per_step(cfg, steps=2, warmup=1) >= accum * 4 * 0.03


def test_seconds_per_step__with_loader_workers(tmp_path):
    assert 0 < seconds_per_step(tiny_cfg(tmp_path, "data.num_workers=1"), steps=2) < 60


def test_budgeted_config__sizes_the_schedule_in_steps(tmp_path, monkeypatch):
    monkeypatch.setattr("openjepa.train.budget.seconds_per_step", lambda cfg: 0.7)
    over = [*TINY, "data.dataset=shapes:24", f"logging.folder={tmp_path / 'run'}"]
    # 24 images / batch 4 = 6 steps per epoch at 0.7 s: 1 minute holds 85 steps, 14 1/6 epochs;
    # whole epochs would have stopped at 84 (or overrun to 90)
    cfg, step_s = budgeted_config(None, over, minutes=1.0)
    o = cfg.optimization
    assert step_s == 0.7 and o.epochs == 15 and o.max_steps == 85
    assert o.max_minutes == pytest.approx(1.0)
    schedule = Schedule(6, o.epochs, o.warmup, ema=(0.996, 1.0), ipe_scale=o.ipe_scale)
    assert schedule.total_steps == 85 and schedule.warmup_steps == 8  # 10% of the steps
    assert schedule.lr(85) == pytest.approx(schedule.final_lr, rel=1e-3)  # the cosine ends on the last step
    assert schedule.momentum(85) == pytest.approx(1.0, abs=1e-4)
    cfg, _ = budgeted_config(None, over, minutes=0.01)  # too short: the minimum schedule, still capped
    assert cfg.optimization.epochs == 2 and cfg.optimization.max_steps == 12
    assert cfg.optimization.max_minutes == pytest.approx(0.01)


def test_budgeted_config__run_stops_at_the_schedule_end(tmp_path, monkeypatch):
    monkeypatch.setattr("openjepa.train.budget.seconds_per_step", lambda cfg: 6.0)
    over = [*TINY, "data.dataset=shapes:24", f"logging.folder={tmp_path / 'run'}"]
    cfg, _ = budgeted_config(None, over, minutes=1.3)  # 13 steps: 2 epochs and one step
    result = fit(cfg, progress=False)
    assert result.steps == 13 and cfg.optimization.epochs == 3
