"""`openjepa viz predict`: a decoder from target features to pixels, applied to the predictor's outputs."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from openjepa.cli.main import main
from openjepa.config import load_config
from openjepa.masks import MultiBlockMaskCollator
from openjepa.models.ijepa import IJEPA, patchify
from openjepa.train.loop import fit
from openjepa.viz.predict import decode_predictions, load_ijepa, train_decoder, unpatchify

TINY = [
    "meta.model_name=vit_tiny",
    "meta.depth=1",
    "meta.pred_depth=1",
    "meta.pred_emb_dim=48",
    "meta.use_bfloat16=false",
    "data.crop_size=32",
    "data.batch_size=4",
    "data.num_workers=0",
    "mask.patch_size=4",
    "mask.min_keep=4",
    "optimization.epochs=1",
    "optimization.warmup=1",
    "logging.tensorboard=false",
    "logging.plots=false",
    "logging.collapse_every_steps=0",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    fit(load_config(None, TINY + ["data.dataset=shapes:16", f"logging.folder={folder}"]), progress=False)
    return folder


def test_unpatchify_inverts_patchify():
    x = torch.randn(2, 3, 16, 24)
    assert torch.equal(unpatchify(patchify(x, 4), 4, (4, 6)), x)


def test_decoder_learns_pixels_from_features_better_than_the_mean():
    torch.manual_seed(0)
    model = IJEPA.build("vit_tiny", 4, 16, pred_depth=1, pred_emb_dim=48, depth=1).eval()
    imgs = torch.randn(64, 3, 16, 16)
    decoder, m = train_decoder(model, imgs, steps=300, batch_tokens=512)
    # Outputting the mean scores the pixel variance; a decoder that learned anything scores less.
    assert m["decoder_val_mse"] < 0.9 * m["pixel_var"]
    assert decoder(torch.randn(5, 192)).shape == (5, 4 * 4 * 3)


def test_decoded_images_keep_context_pixels_and_fill_exactly_the_target_blocks(run):
    model, _ = load_ijepa(run)
    decoder, _ = train_decoder(model, torch.randn(8, 3, 32, 32), steps=5, batch_tokens=64)
    imgs = torch.randn(3, 3, 32, 32)
    masks_enc, masks_pred = MultiBlockMaskCollator(
        32, 4, (0.85, 1.0), (0.15, 0.2), (0.75, 1.5), 1, 4, 4, False, seed=0
    ).sample(3, torch.Generator().manual_seed(1))
    out = decode_predictions(model, decoder, imgs, masks_enc, masks_pred)
    ctx_patches = patchify(out["context"], 4)
    pred_patches = patchify(out["predicted"], 4)
    src = patchify(imgs, 4)
    for i in range(3):
        ctx = masks_enc[0][i]
        assert torch.equal(ctx_patches[i, ctx], src[i, ctx])  # the context is the real image
        targets = torch.cat([m[i] for m in masks_pred]).unique()
        others = torch.tensor(
            [k for k in range(64) if k not in set(ctx.tolist()) | set(targets.tolist())], dtype=torch.long
        )
        if len(others):
            assert torch.all(pred_patches[i, others] == 0)  # neither context nor target: grey
        assert not torch.equal(pred_patches[i, targets], out["oracle"].new_zeros(len(targets), 48))
        assert torch.equal(pred_patches[i, ctx], src[i, ctx])  # targets never overwrite the context
    assert out["cosine"].shape == (sum(m.numel() for m in masks_pred),)


def test_cli_viz_predict_writes_a_grid(run, tmp_path, capsys):
    out = tmp_path / "grid.png"
    rc = main(
        [
            "viz",
            "predict",
            "--checkpoint",
            str(run),
            "--data",
            "shapes:24",
            "--out",
            str(out),
            "--images",
            "3",
            "--decoder-images",
            "16",
            "--decoder-steps",
            "20",
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    assert rc == 0
    with Image.open(out) as im:
        assert im.size[0] > 400 and im.size[1] > 300
    assert "decoder held-out MSE" in capsys.readouterr().out


def test_cli_viz_predict_refuses_an_encoder_only_file_with_a_clear_message(tmp_path, capsys):
    from openjepa.interop import infer_encoder_arch, save_encoder_safetensors
    from openjepa.models import VisionTransformer

    enc = VisionTransformer(img_size=32, patch_size=4, embed_dim=192, depth=1, num_heads=3)
    path = tmp_path / "enc.safetensors"
    save_encoder_safetensors(enc.state_dict(), infer_encoder_arch(enc.state_dict(), num_heads=3), path)
    rc = main(["viz", "predict", "--checkpoint", str(path), "--data", "shapes:24", "--out", str(tmp_path / "g.png")])
    assert rc != 0
    err = capsys.readouterr().err
    assert "checkpoint" in err and not (tmp_path / "g.png").exists()
