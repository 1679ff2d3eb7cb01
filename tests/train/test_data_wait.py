"""The loop reports its throughput and its share of time waiting for data; it warns when the loader is too slow."""

from __future__ import annotations

import csv
import logging
import statistics
import time

from openjepa.train import setup as train_setup
from openjepa.train.loop import fit
from openjepa.train.monitor import METRIC_COLUMNS, DataWait, _keep_rows

from .test_loop import tiny_cfg


class _SlowImages:
    """A training set whose every image costs `delay` seconds to load."""

    def __init__(self, base, delay: float) -> None:
        self.base, self.delay = base, delay

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __getitem__(self, i):
        time.sleep(self.delay)
        return self.base[i]


def _metrics(folder):
    with open(folder / "metrics.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r["loss"]]


def test_fit__logs_throughput_and_data_wait_share_of_every_step(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="openjepa.train"):
        result = fit(tiny_cfg(tmp_path / "run"), progress=False)
    rows = _metrics(tmp_path / "run")
    assert len(rows) == result.steps == 12 and list(rows[0]) == METRIC_COLUMNS
    assert all(float(r["imgs_per_s"]) > 0 and 0.0 <= float(r["data_wait_share"]) <= 1.0 for r in rows)
    assert result.imgs_per_s > 0 and 0.0 <= result.data_wait_share < 1.0
    assert "images/s over the loop" in caplog.text and "waiting for data" in caplog.text
    assert "bottleneck" not in caplog.text  # shapes load in microseconds


def test_fit__warns_when_the_loader_is_the_bottleneck(tmp_path, monkeypatch, caplog):
    build = train_setup.build_train_dataset
    monkeypatch.setattr(train_setup, "build_train_dataset", lambda cfg: _SlowImages(build(cfg), 0.02))
    with caplog.at_level(logging.WARNING, logger="openjepa.train"):
        result = fit(tiny_cfg(tmp_path / "run", "optimization.epochs=1"), progress=False)
    warnings = [r.getMessage() for r in caplog.records if "bottleneck" in r.getMessage()]
    assert len(warnings) == 1  # once a run, not once a window
    assert "data.num_workers (now 0" in warnings[0] and "data.fast_decode" in warnings[0]
    assert result.data_wait_share > 0.2
    assert statistics.fmean(float(r["data_wait_share"]) for r in _metrics(tmp_path / "run")) > 0.2


def test_data_wait__counts_blocked_time_and_leaves_the_pipeline_fill_out_of_the_warning():
    clock = DataWait(threshold=0.2)

    def slow_loader(delays):
        for d in delays:
            time.sleep(d)
            yield d

    batches = clock.batches(slow_loader([0.05, 0.0, 0.0]))
    next(batches)  # the fill: 50 ms of waiting
    assert clock.end_step(wall=0.1, images=4) >= 0.45
    next(batches)
    assert clock.end_step(wall=0.1, images=4) < 0.1
    share, warning = clock.end_window(num_workers=2)
    assert share < 0.1 and warning is None  # the fill is not a bottleneck
    assert 0.2 < clock.share < 0.35 and abs(clock.imgs_per_s - 40) < 1e-9
    next(batches)
    clock.waited = 0.08  # a steady-state step that waited 80% of its time
    clock.end_step(wall=0.1, images=4)
    share, warning = clock.end_window(num_workers=2)
    assert share > 0.7 and "now 2" in warning
    clock.waited = 0.09
    clock.end_step(wall=0.1, images=4)
    assert clock.end_window(num_workers=2)[1] is None  # warned once


def test_resumed_metrics__are_rewritten_under_the_new_columns(tmp_path):
    old = ["step", "epoch", "loss", "lr", "wd", "momentum", "imgs_per_s", "target_std"]
    path = tmp_path / "metrics.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(
            [old, ["1", "1", "0.5", "1e-3", "0.04", "0.996", "10.0", ""], ["2", "1", "0.4"] + [""] * 5]
        )
    _keep_rows(path, 1, lambda row: int(row[0]) <= 1, METRIC_COLUMNS)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == METRIC_COLUMNS and len(rows) == 1
    assert rows[0]["imgs_per_s"] == "10.0" and rows[0]["loss"] == "0.5" and rows[0]["data_wait_share"] == ""
