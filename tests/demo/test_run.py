"""Which labelled set the demo probes, given what it pretrained on."""

from __future__ import annotations

import pytest

from openjepa.demo.run import PROBE_TRAIN_IMAGES, probe_data_for


@pytest.mark.parametrize("kind", ["objects", "shapes"])
def test_probe_data_for__caps_a_large_generated_set_at_the_probe_size(kind):
    assert probe_data_for(f"{kind}:{4 * PROBE_TRAIN_IMAGES}") == f"{kind}:{PROBE_TRAIN_IMAGES}"


@pytest.mark.parametrize("data", ["objects:160", f"objects:{PROBE_TRAIN_IMAGES}", "shapes:2000", "cifar10", "x.npz"])
def test_probe_data_for__keeps_a_small_or_real_set(data):
    assert probe_data_for(data) == data
