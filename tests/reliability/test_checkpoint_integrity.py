"""Corrupt checkpoints are detected (checksum or load validation) and skipped with a warning naming
them; the loader falls back to the previous good one; all-corrupt raises instead of a fresh start."""

from __future__ import annotations

import json
import logging

import pytest

from openjepa.core.checkpoint import (
    CheckpointError,
    find_resumable,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from openjepa.train.loop import fit

from ._tiny import TOTAL_STEPS, losses, params, same_params, tiny_cfg


@pytest.fixture
def stopped_run(tmp_path):
    """A tiny run stopped at step 6 (end of epoch 1) with checkpoints at steps 2, 4 and 6."""
    folder = tmp_path / "run"
    fit(tiny_cfg(folder, "optimization.max_steps=6"), progress=False)
    assert [s for s, _ in list_checkpoints(folder)] == [2, 4, 6]
    return folder


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_one_bit(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10  # in the middle of the tensor data: torch.load alone would not notice
    path.write_bytes(bytes(data))


def _drop_sidecar_and_truncate(path):
    path.with_suffix(".json").unlink()
    _truncate(path)


def _garble_sidecar(path):
    path.with_suffix(".json").write_text("{not json")


@pytest.mark.parametrize("damage", [_truncate, _flip_one_bit, _drop_sidecar_and_truncate, _garble_sidecar])
def test_corrupt_newest_checkpoint__falls_back_to_the_previous_one_with_a_warning_naming_it(
    stopped_run, damage, caplog
):
    newest = stopped_run / "ckpt-step00000006.pt"
    damage(newest)
    with pytest.raises(CheckpointError, match="ckpt-step00000006.pt"):
        load_checkpoint(newest)
    with caplog.at_level(logging.WARNING, logger="openjepa.checkpoint"):
        path, state = find_resumable(stopped_run)
    assert path.name == "ckpt-step00000004.pt" and state["step"] == 4
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("ckpt-step00000006.pt" in w and "falling back" in w for w in warnings), warnings


def test_bit_flip__is_caught_by_the_sha256_sidecar(stopped_run):
    newest = stopped_run / "ckpt-step00000006.pt"
    meta = json.loads(newest.with_suffix(".json").read_text())
    assert meta["step"] == 6 and len(meta["sha256"]) == 64
    _flip_one_bit(newest)
    assert newest.stat().st_size == meta["bytes"]  # same size: only the checksum can tell
    with pytest.raises(CheckpointError, match="SHA-256"):
        verify_checkpoint(newest)


def test_resume_past_a_corrupt_checkpoint__continues_from_the_previous_one_and_ends_exact(
    stopped_run, baseline, caplog
):
    _flip_one_bit(stopped_run / "ckpt-step00000006.pt")
    with caplog.at_level(logging.WARNING):
        result = fit(tiny_cfg(stopped_run), resume=True, progress=False)
    assert any("ckpt-step00000006.pt" in r.getMessage() for r in caplog.records)
    assert result.steps == TOTAL_STEPS
    assert not same_params(params(baseline), params(stopped_run))
    assert losses(stopped_run) == losses(baseline)  # steps 5-6 recomputed and logged once


def test_all_checkpoints_corrupt__raises_instead_of_starting_fresh(stopped_run):
    for _, path in list_checkpoints(stopped_run):
        _truncate(path)
    with pytest.raises(CheckpointError, match="no usable checkpoint") as e:
        find_resumable(stopped_run)
    assert all(f"ckpt-step0000000{s}.pt" in str(e.value) for s in (2, 4, 6))
    before = (stopped_run / "metrics.csv").read_text()
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        fit(tiny_cfg(stopped_run), resume=True, progress=False)
    assert (stopped_run / "metrics.csv").read_text() == before  # nothing was restarted or overwritten


def test_pruning_never_deletes_the_new_checkpoint_in_favour_of_a_newer_corrupt_one(tmp_path):
    # after falling back from a corrupt step-8 file, writing step 6 with keep_last=1 must keep step 6
    save_checkpoint({"step": 4}, tmp_path, 4, keep_last=1)
    save_checkpoint({"step": 8}, tmp_path, 8, keep_last=1)
    _truncate(tmp_path / "ckpt-step00000008.pt")
    save_checkpoint({"step": 6}, tmp_path, 6, keep_last=1)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [6, 8]
    assert find_resumable(tmp_path)[1]["step"] == 6
