"""The loop's guards on their own: stop signals, the skip counter, the finiteness and spike checks, write errors."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest
import torch

from openjepa.core.checkpoint import CheckpointWriteError
from openjepa.train import guards
from openjepa.train.guards import NonFiniteLossError, SkipCounter, StopSignals, check_finite, warn_spikes, write_failed


def test_stop_signals__record_the_signal_instead_of_dying_then_restore_the_handler():
    before = signal.getsignal(signal.SIGUSR1)
    with StopSignals() as stops:
        assert stops.received is None
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stops.received == signal.SIGUSR1
        # a second signal of the same kind gets the previous handler back (a stuck run can still be stopped)
        assert signal.getsignal(signal.SIGUSR1) == before
    assert signal.getsignal(signal.SIGUSR1) == before


def test_skip_counter__counts_and_logs_skipped_steps_and_resets_the_run_on_a_finite_one(caplog):
    skips = SkipCounter(True, total=3)
    for ok in (True, False, False, True):
        skips.record(torch.tensor(ok))
    with caplog.at_level(logging.WARNING, logger="openjepa.train"):
        skips.drain(last_step=10, last_ckpt=None)
    assert skips.total == 5 and skips.in_a_row == 0
    assert "skipped step(s) 8, 9:" in caplog.text and "(5 skipped so far)" in caplog.text
    skips.drain(last_step=11, last_ckpt=None)  # nothing recorded since: nothing to do
    assert skips.total == 5


def test_skip_counter__stops_after_max_consecutive_skips_naming_the_last_good_checkpoint(monkeypatch):
    monkeypatch.setattr(guards, "MAX_CONSECUTIVE_SKIPS", 3)
    skips = SkipCounter(True)
    for _ in range(3):
        skips.record(torch.tensor(False))
    with pytest.raises(NonFiniteLossError, match=r"^3 steps in a row up to step 7 .*checkpoint is run/ck\.pt\)"):
        skips.drain(last_step=7, last_ckpt=Path("run/ck.pt"))


def test_check_finite__passes_at_minus_one_and_names_the_step_otherwise():
    check_finite(torch.tensor(-1), None)
    with pytest.raises(NonFiniteLossError, match=r"non-finite at step 4; stopped \(no checkpoint was written yet\)"):
        check_finite(torch.tensor(4), None)


def test_warn_spikes__names_the_step_of_the_largest_loss_above_3x_the_median(caplog):
    history = [1.0] * 20
    with caplog.at_level(logging.WARNING, logger="openjepa.train"):
        warn_spikes([1.0, float("nan"), 2.9], history, first_step=21)
        assert not caplog.records
        warn_spikes([1.0, 5.0, 3.5], history, first_step=21)
        warn_spikes([50.0], history[:19], first_step=30)  # too little history: no verdict
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["loss spike at step 22"]


def test_write_failed__names_what_failed_and_where_to_continue_from():
    err = write_failed(OSError(28, "No space left on device"), "the step 4 checkpoint", Path("run/ckpt-2.pt"))
    assert isinstance(err, CheckpointWriteError)
    assert str(err) == (
        "could not write the step 4 checkpoint ([Errno 28] No space left on device); the run "
        "stopped and the last good checkpoint is run/ckpt-2.pt (continue with --resume). "
        "Free disk space or choose another logging.folder"
    )
    assert "no checkpoint was written yet." in str(write_failed(OSError("x"), "it", None))
