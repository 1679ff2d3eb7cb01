"""A checkpoint that would run code when unpickled is refused, and the code never runs."""

from __future__ import annotations

import pytest
import torch

from openjepa.core.checkpoint import CheckpointError
from openjepa.interop import convert, load_encoder, load_reference_checkpoint, load_timm


class _Payload:
    """Unpickling this calls open(marker, "w"): creates the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture()
def malicious(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "IN1K-vit.h.14-300e.pth.tar"
    torch.save({"encoder": {"pos_embed": torch.zeros(1)}, "target_encoder": {}, "x": _Payload(str(marker))}, path)
    assert not marker.exists()
    return path, marker


@pytest.mark.parametrize("entry", ["load_encoder", "convert", "load_reference_checkpoint", "load_timm"])
def test_malicious_pickle__refused_and_marker_not_created(malicious, tmp_path, entry):
    path, marker = malicious
    call = {
        "load_encoder": lambda: load_encoder(path),
        "convert": lambda: convert(path, tmp_path / "out.safetensors", None, "safetensors"),
        "load_reference_checkpoint": lambda: load_reference_checkpoint(path),
        "load_timm": lambda: load_timm(path),
    }[entry]
    with pytest.raises(CheckpointError, match="arbitrary unpickling"):
        call()
    assert not marker.exists()
