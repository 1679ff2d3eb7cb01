"""Disk full and unwritable output folders: a clear error before training starts, and a clean stop
during training that leaves the last good checkpoint intact and names it."""

from __future__ import annotations

import errno
import os
import shutil
from collections import namedtuple

import pytest
import torch

import openjepa.train.loop as loop
from openjepa.core.checkpoint import CheckpointWriteError, check_free_space, list_checkpoints, load_checkpoint
from openjepa.train.loop import fit

from ._tiny import tiny_cfg

Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if a training step runs."""

    def forbidden(*args, **kwargs):
        raise AssertionError("training started although the run could not be saved")

    monkeypatch.setattr(loop, "train_step", forbidden)


def test_free_space_check__names_folder_sizes_and_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10 << 30, (10 << 30) - (5 << 20), 5 << 20))
    with pytest.raises(OSError, match=r"only 5 MiB free in .*a checkpoint needs about 100 MiB.*logging.folder"):
        check_free_space(tmp_path, 100 << 20)
    check_free_space(tmp_path, 1 << 20)  # enough: no error


def test_disk_full_before_training__clear_error_and_no_step_runs(tmp_path, monkeypatch, no_training):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(1 << 30, (1 << 30) - 4096, 4096))
    with pytest.raises(OSError, match="free some space or choose another logging.folder") as e:
        fit(tiny_cfg(tmp_path / "run"), progress=False)
    assert "\n" not in str(e.value)
    assert not list_checkpoints(tmp_path / "run")


def test_unwritable_folder_before_training__clear_error(tmp_path, monkeypatch, no_training):
    real_access = os.access
    run = tmp_path / "run"
    monkeypatch.setattr(
        os,
        "access",
        lambda p, mode, **kw: False if str(p) == str(run) and mode & os.W_OK else real_access(p, mode, **kw),
    )
    with pytest.raises(OSError, match=f"output folder {run} is not writable; choose another logging.folder"):
        fit(tiny_cfg(run), progress=False)


def test_output_folder_that_cannot_be_created__clear_error(tmp_path, no_training):
    (tmp_path / "a-file").write_text("")  # works as root too: nothing can be created under a file
    with pytest.raises(OSError, match=r"cannot create output folder .*a-file/run .*choose another logging.folder") as e:
        fit(tiny_cfg(tmp_path / "a-file" / "run"), progress=False)
    assert "\n" not in str(e.value)


def test_read_only_folder_via_chmod__clear_error(tmp_path, no_training):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        probe = locked / "probe"
        try:
            probe.touch()
        except PermissionError:
            pass
        else:  # root (or CAP_DAC_OVERRIDE) writes through any mode bits
            probe.unlink()
            pytest.skip(
                "running with root privileges: chmod 555 does not stop writes here, so a "
                "read-only folder cannot be simulated (the os.access test covers the code path)"
            )
        with pytest.raises(OSError, match="cannot create output folder") as e:
            fit(tiny_cfg(locked / "run"), progress=False)
        assert str(locked) in str(e.value) and "\n" not in str(e.value)
        with pytest.raises(OSError, match="not writable"):
            fit(tiny_cfg(locked), progress=False)
    finally:
        locked.chmod(0o755)


def test_write_error_mid_run__stops_with_the_last_good_checkpoint_intact_and_named(tmp_path, monkeypatch):
    real_save = torch.save

    def disk_full_at_step_4(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == 4:
            f.write(b"partial bytes")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_full_at_step_4)
    run = tmp_path / "run"
    with pytest.raises(CheckpointWriteError) as e:
        fit(tiny_cfg(run), progress=False)
    msg = str(e.value)
    assert "step 4" in msg and "No space left on device" in msg and "\n" not in msg
    assert f"the last good checkpoint is {run / 'ckpt-step00000002.pt'}" in msg and "--resume" in msg
    assert isinstance(e.value, OSError)  # the CLI maps it to a one-line error, exit code 2
    assert [s for s, _ in list_checkpoints(run)] == [2]
    assert load_checkpoint(run / "ckpt-step00000002.pt")["step"] == 2
    assert not list(run.glob(".*.tmp")), "the partial file must be removed"


def test_disk_filling_up_mid_run__free_space_check_stops_before_writing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = shutil.disk_usage

    def shrinking(p):
        calls["n"] += 1  # fit's check before training, then one per checkpoint
        return real(p) if calls["n"] <= 2 else Usage(1 << 30, (1 << 30) - 4096, 4096)

    monkeypatch.setattr(shutil, "disk_usage", shrinking)
    run = tmp_path / "run"
    with pytest.raises(CheckpointWriteError, match=r"step 4 checkpoint \(only 0 MiB free") as e:
        fit(tiny_cfg(run), progress=False)
    assert "ckpt-step00000002.pt" in str(e.value)
    assert load_checkpoint(run / "ckpt-step00000002.pt")["step"] == 2


def test_cli_disk_full__one_line_error_exit_code_2(tmp_path, monkeypatch, capsys, cli_main):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(1 << 30, (1 << 30) - 4096, 4096))
    from ._tiny import TINY

    argv = ["pretrain", "--no-progress", "--data", "shapes:24", "--out", str(tmp_path / "run")]
    for item in TINY:
        argv += ["--set", item]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("openjepa pretrain: error: only 0 MiB free"), err
