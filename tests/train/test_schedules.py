"""The schedules' shapes: the regulariser multiplier (not in the reference) beside lr / wd / momentum."""

from __future__ import annotations

import pytest

from openjepa.train import Schedule


def test_reg_scale__constant_by_default_and_a_half_cosine_to_its_final_value():
    steady = Schedule(10, 10, 1)
    assert {steady.reg_scale(s) for s in (1, 50, 100, 150)} == {1.0}
    fading = Schedule(10, 10, 1, reg_final_scale=0.0)
    values = [fading.reg_scale(s) for s in range(1, 101)]
    assert values[0] == pytest.approx(1.0, abs=1e-3)
    assert fading.reg_scale(50) == pytest.approx(0.5)  # the half-cosine's midpoint
    assert values[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert fading.reg_scale(130) == 0.0  # held at the final value past the schedule's end
    rising = Schedule(10, 10, 1, reg_final_scale=2.0)
    assert rising.reg_scale(100) == pytest.approx(2.0) and rising.reg_scale(200) == 2.0


def test_reg_scale__follows_the_stretched_schedule_like_weight_decay():
    s = Schedule(10, 10, 1, weight_decay=1.0, final_weight_decay=0.0, ipe_scale=1.5, reg_final_scale=0.0)
    assert all(s.reg_scale(k) == s.wd(k) for k in (1, 40, 75, 149, 150))
