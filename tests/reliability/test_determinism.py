"""Determinism on CPU: the same seed gives the same losses and parameters; another seed does not."""

from __future__ import annotations

from openjepa.train.loop import fit

from ._tiny import losses, params, same_params, tiny_cfg


def test_same_seed__identical_loss_sequence_and_parameters(tmp_path, baseline):
    fit(tiny_cfg(tmp_path / "again"), progress=False)
    assert losses(tmp_path / "again") == losses(baseline)
    assert [s for s, _ in losses(baseline)] == list(range(1, 13))
    assert not same_params(params(baseline), params(tmp_path / "again"))


def test_other_seed__differs_so_the_check_above_is_not_vacuous(tmp_path, baseline):
    fit(tiny_cfg(tmp_path / "other", "meta.seed=1", "optimization.max_steps=2"), progress=False)
    assert losses(tmp_path / "other")[:2] != losses(baseline)[:2]
