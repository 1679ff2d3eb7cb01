"""load_encoder on every source kind, which= target/context, architecture errors, and embed()."""

from __future__ import annotations

import logging

import pytest
import torch
from PIL import Image

from openjepa.core.checkpoint import CheckpointError, save_checkpoint
from openjepa.interop import Encoder, convert, load_encoder
from tests.conftest import strip_module
from tests.interop.conftest import GOLDEN_HEADS, export_safetensors, same_state, tiny_encoder


@pytest.fixture(scope="module")
def golden_files(golden_ref_file, tmp_path_factory):
    """The golden target encoder in every format (plus the reference file itself)."""
    d = tmp_path_factory.mktemp("formats")
    ours = convert(golden_ref_file, d / "run.pt", "reference", "openjepa", num_heads=GOLDEN_HEADS)
    return {
        "reference": golden_ref_file,
        "openjepa": ours,
        "hf": convert(ours, d / "hf", "openjepa", "hf"),
        "timm": convert(ours, d / "timm.safetensors", "openjepa", "timm"),
        "safetensors": convert(ours, d / "enc.safetensors", "openjepa", "safetensors"),
    }


@pytest.mark.parametrize("kind", ["reference", "openjepa", "hf", "timm", "safetensors"])
def test_load_encoder__each_source_kind_gives_golden_target(golden_files, golden_ref, kind):
    kw = {"num_heads": GOLDEN_HEADS} if kind == "reference" else {}
    enc = load_encoder(golden_files[kind], **kw)
    assert isinstance(enc, Encoder) and not enc.training
    assert same_state(enc.state_dict(), strip_module(golden_ref["target_encoder"]))
    assert enc.meta["format"] == kind and enc.meta["which"] == "target"
    assert set(enc.meta) >= {"source", "which", "arch", "fingerprint"}
    assert enc.meta["arch"]["img_size"] == [32, 32]
    assert enc.preprocess(Image.new("RGB", (50, 40))).shape == (3, 32, 32)


def test_load_encoder__reference_without_module_prefix_and_in_memory_dict(golden_ref, tmp_path):
    plain = {k: (strip_module(v) if isinstance(v, dict) else v) for k, v in golden_ref.items()}
    torch.save(plain, tmp_path / "plain.pth.tar")
    a = load_encoder(tmp_path / "plain.pth.tar", num_heads=GOLDEN_HEADS)
    b = load_encoder(golden_ref, num_heads=GOLDEN_HEADS)
    assert same_state(a.state_dict(), b.state_dict())
    assert a.meta["fingerprint"] == b.meta["fingerprint"]
    # the caller's tensors are not aliased by the returned model
    assert (
        b.blocks[0].attn.qkv.weight.data_ptr()
        != golden_ref["target_encoder"]["module.blocks.0.attn.qkv.weight"].data_ptr()
    )


def test_load_encoder__timm_pth_and_run_folder(golden_ref_file, golden_ref, tmp_path):
    pth = convert(golden_ref_file, tmp_path / "timm.pth", "reference", "timm", num_heads=GOLDEN_HEADS)
    with pytest.raises(CheckpointError, match="num-heads"):
        load_encoder(pth)  # a bare state dict does not record the heads
    enc = load_encoder(pth, num_heads=GOLDEN_HEADS)
    assert same_state(enc.state_dict(), strip_module(golden_ref["target_encoder"]))
    assert enc.meta["which"] is None
    st = convert(golden_ref_file, tmp_path / "x.pt", "reference", "openjepa", num_heads=GOLDEN_HEADS)
    save_checkpoint(
        {k: v for k, v in torch.load(st, weights_only=True).items() if k not in ("format", "format_version")},
        tmp_path / "run",
        step=5,
    )
    assert load_encoder(tmp_path / "run").meta["fingerprint"] == enc.meta["fingerprint"]


def test_load_encoder__which_context_and_target_are_the_two_golden_encoders(golden_files, golden_ref, caplog):
    for kind in ("reference", "openjepa"):
        kw = {"num_heads": GOLDEN_HEADS} if kind == "reference" else {}
        with caplog.at_level(logging.INFO, logger="openjepa.interop"):
            tgt = load_encoder(golden_files[kind], **kw)
            ctx = load_encoder(golden_files[kind], which="context", **kw)
        assert "target encoder (EMA" in caplog.text and "context encoder" in caplog.text
        assert same_state(tgt.state_dict(), strip_module(golden_ref["target_encoder"]))
        assert same_state(ctx.state_dict(), strip_module(golden_ref["encoder"]))
        assert not same_state(tgt.state_dict(), ctx.state_dict())
        assert (tgt.meta["which"], ctx.meta["which"]) == ("target", "context")
        assert tgt.meta["fingerprint"] != ctx.meta["fingerprint"]


def test_load_encoder__one_encoder_file_warns_when_other_encoder_is_asked(golden_files, caplog):
    with caplog.at_level(logging.WARNING, logger="openjepa.interop"):
        enc = load_encoder(golden_files["safetensors"], which="context")
    assert enc.meta["which"] == "target" and "holds only the target encoder" in caplog.text


def test_load_encoder__wrong_architecture_lists_mismatched_shapes_on_one_line(golden_files):
    with pytest.raises(CheckpointError) as e:
        load_encoder(golden_files["openjepa"], model_name="vit_tiny")
    msg = str(e.value)
    assert "\n" not in msg
    assert "blocks.0.attn.qkv.weight: expected (576, 192) vs got (192, 64)" in msg
    assert "pos_embed: expected (1, 64, 192) vs got (1, 64, 64)" in msg
    with pytest.raises(CheckpointError, match=r"pos_embed: expected \(1, 16, 64\) vs got \(1, 64, 64\)"):
        load_encoder(golden_files["safetensors"], img_size=16)
    with pytest.raises(CheckpointError, match="records 4 attention heads"):
        load_encoder(golden_files["safetensors"], num_heads=8)


def test_load_encoder__random_baseline_is_seeded_and_sized():
    a = load_encoder("random:vit_tiny", patch_size=8, img_size=32)
    b = load_encoder("random:vit_tiny", patch_size=8, img_size=32)
    c = load_encoder("random:vit_tiny", patch_size=8, img_size=32, seed=1)
    assert a.meta["which"] == "random" and a.num_patches == 16 and a.embed_dim == 192 and len(a.blocks) == 12
    assert a.meta["fingerprint"] == b.meta["fingerprint"] != c.meta["fingerprint"]
    assert a.embed(torch.randn(2, 3, 32, 32), progress=False).shape == (2, 192)


def _images(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        Image.fromarray((torch.rand(40 + 4 * i, 48, 3, generator=g) * 255).to(torch.uint8).numpy()) for i in range(n)
    ]


def test_embed__pil_list_tensor_and_folder_give_identical_features(tmp_path):
    st = export_safetensors(tiny_encoder(seed=4), tmp_path / "e.safetensors")
    enc = load_encoder(st)
    imgs = _images()
    folder = tmp_path / "imgs"
    for i, im in enumerate(imgs):  # nested folders; sorted path order == list order
        sub = folder / f"d{i // 3}"
        sub.mkdir(parents=True, exist_ok=True)
        im.save(sub / f"img{i}.png")
    (folder / "notes.txt").write_text("not an image")
    from_pil = enc.embed(imgs, batch_size=2, progress=False)
    from_tensor = enc.embed(torch.stack([enc.preprocess(im) for im in imgs]), batch_size=2, progress=False)
    from_folder = enc.embed(folder, batch_size=2, progress=False)
    assert from_pil.shape == (5, 192) and from_pil.dtype == torch.float32 and from_pil.device.type == "cpu"
    assert torch.equal(from_pil, from_tensor) and torch.equal(from_pil, from_folder)
    # batching does not change the features (beyond float rounding)
    assert torch.allclose(enc.embed(imgs, batch_size=64, progress=False), from_pil, atol=1e-5)
    assert torch.allclose(from_pil, enc(torch.stack([enc.preprocess(im) for im in imgs])).mean(1), atol=1e-5)
    assert enc.embed(imgs[:2], pooling="avg_last4", progress=False).shape == (2, 2 * 192)  # depth 2: 2 layers
    assert enc.embed(imgs[0], pooling="patch", progress=False).shape == (1, 16, 192)
