"""Budget sizing: step timing over the real data loader, the schedule sized in steps to the minutes."""

from __future__ import annotations

import time

import pytest

from openjepa.config import ConfigError
from openjepa.core.checkpoint import load_checkpoint
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
    cfg, step_s = budgeted_config(None, over, minutes=1.0, clock="steps")
    o = cfg.optimization
    assert step_s == 0.7 and o.epochs == 15 and o.max_steps == 85 and o.clock == "steps"
    assert o.max_minutes == pytest.approx(1.0)
    schedule = Schedule(6, o.epochs, o.warmup, ema=(0.996, 1.0), ipe_scale=o.ipe_scale)
    assert schedule.total_steps == 85 and schedule.warmup_steps == 8  # 10% of the steps
    assert schedule.lr(85) == pytest.approx(schedule.final_lr, rel=1e-3)  # the cosine ends on the last step
    assert schedule.momentum(85) == pytest.approx(1.0, abs=1e-4)
    cfg, _ = budgeted_config(None, over, minutes=0.01, clock="steps")  # too short: the minimum schedule, still capped
    assert cfg.optimization.epochs == 2 and cfg.optimization.max_steps == 12
    assert cfg.optimization.max_minutes == pytest.approx(0.01)


def test_budgeted_config__run_stops_at_the_schedule_end(tmp_path, monkeypatch):
    monkeypatch.setattr("openjepa.train.budget.seconds_per_step", lambda cfg: 6.0)
    over = [*TINY, "data.dataset=shapes:24", f"logging.folder={tmp_path / 'run'}"]
    cfg, _ = budgeted_config(None, over, minutes=1.3, clock="steps")  # 13 steps: 2 epochs and one step
    result = fit(cfg, progress=False)
    assert result.steps == 13 and cfg.optimization.epochs == 3


def test_budgeted_config__time_clock_keeps_the_schedule_length_and_drops_the_step_cap(tmp_path, monkeypatch):
    monkeypatch.setattr("openjepa.train.budget.seconds_per_step", lambda cfg: 0.7)
    over = [*TINY, "data.dataset=shapes:24", f"logging.folder={tmp_path / 'run'}"]
    o = budgeted_config(None, over, minutes=1.0)[0].optimization  # clock="time" is the default
    assert o.clock == "time" and o.max_steps is None and o.max_minutes == pytest.approx(1.0)
    assert o.epochs == 29  # room for twice the 85 estimated steps: the budget, not a step count, ends the run
    schedule = Schedule(6, o.epochs, o.warmup, ema=(0.996, 1.0), ipe_scale=o.ipe_scale)
    assert schedule.total_steps == 85 and schedule.warmup_steps == 8


def _run_at(elapsed_s: float, offset_s: float, minutes: float, total: int):
    """A Run and LoopState whose clock reads `elapsed_s` in this process after `offset_s` in earlier ones."""
    from types import SimpleNamespace

    cfg = SimpleNamespace(optimization=SimpleNamespace(clock="time", max_minutes=minutes))
    run = SimpleNamespace(cfg=cfg, schedule=Schedule(total, 1, 0.1), t0=time.perf_counter() - elapsed_s)
    return run, SimpleNamespace(clock_offset=offset_s)


def test_clock_position__follows_the_elapsed_share_of_the_budget_resumes_included():
    from openjepa.train.loop import clock_position

    assert clock_position(*_run_at(0.0, 0.0, 1.0, 100)) == 1  # the first step is the schedule's first
    assert clock_position(*_run_at(30.0, 0.0, 1.0, 100)) in (50, 51)  # half the budget: half the schedule
    assert clock_position(*_run_at(15.0, 30.0, 1.0, 100)) in (75, 76)  # a resumed run keeps its earlier time
    assert clock_position(*_run_at(90.0, 0.0, 1.0, 100)) == 100  # past the budget: held at the end


def test_fit__time_clock_ends_the_cosine_at_the_budget_whatever_the_step_time(tmp_path):
    import csv

    # a 4-step schedule (1 of warmup) on a 6-second budget: the tiny steps are far faster than 1.5 s,
    # so the run takes many more steps, and its lr follows the clock: warmup, then the whole cosine
    clock = ["optimization.clock=time", "optimization.max_minutes=0.1", "optimization.epochs=1000"]
    cfg = tiny_cfg(
        tmp_path / "run", *clock, "optimization.ipe_scale=0.00075", "optimization.warmup=0.17", "logging.log_freq=1"
    )
    result = fit(cfg, progress=False)
    assert result.stop_reason == "max_minutes" and result.steps > 4
    with open(tmp_path / "run" / "metrics.csv") as f:
        lrs = [float(r["lr"]) for r in csv.DictReader(f)]
    peak = cfg.optimization.lr
    assert max(lrs) == pytest.approx(peak, rel=0.05) and lrs[-1] < 0.1 * peak
    assert load_checkpoint(result.checkpoint)["train_seconds"] == pytest.approx(6.0, abs=1.5)


def test_config__time_clock_without_a_budget_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="optimization.clock.*max_minutes"):
        tiny_cfg(tmp_path, "optimization.clock=time")


def test_schedule__time_clock_is_refused_with_several_processes(tmp_path):
    from openjepa.core.distributed import DistEnv
    from openjepa.train.setup import _schedule

    cfg = tiny_cfg(tmp_path, "optimization.clock=time", "optimization.max_minutes=1")
    assert _schedule(cfg, DistEnv(), 24)[0].total_steps == 12  # one process: accepted
    with pytest.raises(ValueError, match="clock=time runs on one process"):
        _schedule(cfg, DistEnv(rank=0, world_size=2), 24)
