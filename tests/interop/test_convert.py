"""convert() between every pair of formats, and the CLI hooks add_convert_args / run_convert."""

from __future__ import annotations

import argparse

import pytest
import torch

from openjepa.interop import FORMATS, add_convert_args, convert, detect_format, load_encoder, run_convert
from tests.interop.conftest import export_safetensors, same_state, tiny_encoder

_OUT = {
    "openjepa": "out.pt",
    "reference": "out.pth.tar",
    "hf": "out_hf",
    "timm": "out.safetensors",
    "safetensors": "out_enc.safetensors",
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """The same encoder (a locally built vit_tiny-width ViT) in every format."""
    d = tmp_path_factory.mktemp("src")
    enc = tiny_encoder(seed=5)
    st = export_safetensors(enc, d / "src.safetensors")
    out = {"safetensors": st}
    for fmt in FORMATS:
        if fmt != "safetensors":
            out[fmt] = convert(st, d / f"src_{_OUT[fmt]}", "safetensors", fmt, encoder_only=True)
    return enc.state_dict(), out


@pytest.mark.parametrize("src_fmt", FORMATS)
@pytest.mark.parametrize("dst_fmt", FORMATS)
def test_convert__every_pair_keeps_the_encoder_bit_exact(sources, tmp_path, src_fmt, dst_fmt):
    sd, files = sources
    assert detect_format(files[src_fmt]) == src_fmt
    out = convert(files[src_fmt], tmp_path / _OUT[dst_fmt], src_fmt, dst_fmt, encoder_only=True)
    assert detect_format(out) == dst_fmt
    assert same_state(load_encoder(out).state_dict(), sd)


def test_run_convert__cli_hooks(sources, tmp_path, capsys):
    sd, files = sources
    parser = add_convert_args(argparse.ArgumentParser(prog="openjepa convert"))
    args = parser.parse_args(["--from", "safetensors", "--to", "hf", str(files["safetensors"]), str(tmp_path / "hf")])
    assert (args.which, args.num_heads, args.encoder_only) == ("target", None, False)
    assert run_convert(args) == 0
    assert str(tmp_path / "hf") in capsys.readouterr().out
    assert same_state(load_encoder(tmp_path / "hf").state_dict(), sd)
    # an encoder-only source cannot become a training checkpoint without --encoder-only: exit 2, says why
    args = parser.parse_args(["--to", "reference", str(tmp_path / "hf"), str(tmp_path / "r.pth.tar")])
    assert run_convert(args) == 2
    err = capsys.readouterr().err
    assert "predictor" in err and "--encoder-only" in err
    args = parser.parse_args(["--to", "reference", "--encoder-only", str(tmp_path / "hf"), str(tmp_path / "r.pth.tar")])
    assert run_convert(args) == 0
    assert set(torch.load(tmp_path / "r.pth.tar", weights_only=True)) >= {"encoder", "target_encoder", "epoch"}
