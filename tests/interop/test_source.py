"""Encoder sources: parse_encoder_source (one case rule) and resolve_encoder."""

from __future__ import annotations

import pytest
import torch

from openjepa.interop import load_encoder
from openjepa.interop.source import EncoderSource, parse_encoder_source, resolve_encoder


@pytest.mark.parametrize(
    "text, kind, model, path",
    [
        ("random:vit_tiny", "random", "vit_tiny", None),
        ("RANDOM: vit_small", "random", "vit_small", None),  # the prefix in any case
        ("pixels", "pixels", None, None),
        ("Pixels", "pixels", None, None),
        ("runs/Demo/ckpt.pt", "path", None, "runs/Demo/ckpt.pt"),  # paths as written
        ("IN1K-vit.h.14-300e.pth.tar", "path", None, "IN1K-vit.h.14-300e.pth.tar"),
    ],
)
def test_parse__kinds_and_text(text, kind, model, path):
    src = parse_encoder_source(text)
    assert (src.kind, src.model, src.path, src.text) == (kind, model, path, text)
    assert parse_encoder_source(src) is src and str(src) == text


@pytest.mark.parametrize("text, needle", [("random:", "needs a model name"), ("  ", "no encoder source")])
def test_parse__bad_sources(text, needle):
    with pytest.raises(ValueError, match=needle):
        parse_encoder_source(text)


def test_run_folder__of_paths_only(tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"")
    assert parse_encoder_source(str(ckpt)).run_folder == tmp_path
    assert parse_encoder_source(str(tmp_path)).run_folder == tmp_path
    assert parse_encoder_source(str(tmp_path / "gone.pt")).run_folder is None
    assert parse_encoder_source("random:vit_tiny").run_folder is None
    assert EncoderSource("pixels", "pixels").run_folder is None


def test_resolve__random_matches_load_encoder_and_defaults_apply():
    enc = resolve_encoder("Random:vit_tiny", random_arch={"patch_size": 4, "img_size": 32, "depth": 1})
    ref = load_encoder("random:vit_tiny", patch_size=4, img_size=32, depth=1)
    assert enc.meta["source"] == "random:vit_tiny" and enc.meta["fingerprint"] == ref.meta["fingerprint"]
    torch.testing.assert_close(enc.pos_embed, ref.pos_embed)
    default = resolve_encoder("random:vit_tiny", random_arch={"depth": 1, "img_size": None})
    assert int(default.patch_size) == 16 and int(default.img_size[0]) == 224


def test_resolve__a_saved_file_and_pixels(tmp_path):
    from openjepa.interop import save_encoder_safetensors

    enc = load_encoder("random:vit_tiny", patch_size=4, img_size=32, depth=1)
    path = save_encoder_safetensors(enc.state_dict(), enc.meta["arch"], tmp_path / "e.safetensors", which="target")
    # random_arch does not apply to a file: it records its own architecture
    got = resolve_encoder(str(path), random_arch={"patch_size": 16, "img_size": 224})
    assert got.meta["fingerprint"] == enc.meta["fingerprint"] and int(got.patch_size) == 4
    with pytest.raises(ValueError, match="raw-pixel baseline, not an encoder"):
        resolve_encoder("pixels")
