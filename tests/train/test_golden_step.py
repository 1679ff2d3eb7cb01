"""Parity with the reference implementation on one complete training step (golden vectors)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from openjepa.models import VisionTransformer, vit_predictor
from openjepa.models.ijepa import IJEPA
from openjepa.train import Schedule, make_optimizer, train_step
from tests.conftest import strip_module


def build_from_golden(golden: dict) -> IJEPA:
    cfg = golden["config"]
    ck = golden["checkpoint_official_format"]
    kw = dict(
        img_size=cfg["img"], patch_size=cfg["patch"], embed_dim=cfg["dim"], depth=cfg["depth"], num_heads=cfg["heads"]
    )
    enc, tgt = VisionTransformer(**kw), VisionTransformer(**kw)
    pred = vit_predictor(
        num_patches=(cfg["img"] // cfg["patch"]) ** 2,
        embed_dim=cfg["dim"],
        predictor_embed_dim=cfg["pdim"],
        depth=cfg["pdepth"],
        num_heads=cfg["heads"],
    )
    enc.load_state_dict(strip_module(ck["encoder"]), strict=True)
    tgt.load_state_dict(strip_module(ck["target_encoder"]), strict=True)
    pred.load_state_dict(strip_module(ck["predictor"]), strict=True)
    return IJEPA(enc, pred, tgt)


def golden_schedule(golden: dict) -> Schedule:
    s = golden["config"]["schedule"]
    return Schedule(
        iterations_per_epoch=s["ipe"],
        epochs=s["epochs"],
        warmup_epochs=s["warmup_epochs"],
        start_lr=s["start_lr"],
        ref_lr=s["ref_lr"],
        final_lr=s["final_lr"],
        weight_decay=s["wd"],
        final_weight_decay=s["final_wd"],
        ema=s["ema"],
        ipe_scale=s["ipe_scale"],
    )


@pytest.fixture()
def model(golden_step):
    return build_from_golden(golden_step)


def test_forward__targets_context_predictions_and_loss_match_reference(model, golden_step):
    g = golden_step
    with torch.no_grad():
        raw = model.target_encoder(g["imgs"])
    assert (raw - g["target_features_unmasked_before_layernorm"]).abs().max() < 1e-4
    targets = model.targets(g["imgs"], g["masks_enc"], g["masks_pred"])
    assert targets.shape == g["targets"].shape
    assert (targets - g["targets"]).abs().max() < 1e-4
    context = model.encoder(g["imgs"], g["masks_enc"])
    assert (context - g["context_encoder_out"]).abs().max() < 1e-4
    preds = model.predict(g["imgs"], g["masks_enc"], g["masks_pred"])
    assert (preds - g["predictions"]).abs().max() < 1e-4
    assert abs(F.smooth_l1_loss(preds, targets).item() - g["loss_smooth_l1"].item()) < 1e-4
    assert abs(F.mse_loss(preds, targets).item() - g["loss_mse"].item()) < 1e-4
    assert abs(model(g["imgs"], g["masks_enc"], g["masks_pred"]).item() - g["loss_smooth_l1"].item()) < 1e-4


def test_backward__every_gradient_matches_reference(model, golden_step):
    g = golden_step
    model(g["imgs"], g["masks_enc"], g["masks_pred"]).backward()
    ours = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert set(ours) == set(g["grads"]), "trainable parameter names differ from the reference's"
    for name, ref in g["grads"].items():
        rel = (ours[name] - ref).norm() / ref.norm().clamp_min(1e-12)
        assert rel < 1e-4, f"{name}: relative gradient error {rel:.2e}"


def test_step__adamw_and_ema_update_match_reference(model, golden_step):
    g = golden_step
    opt_cfg = g["config"]["optimizer"]
    optimizer = make_optimizer(model.encoder, model.predictor, betas=opt_cfg["betas"], eps=opt_cfg["eps"])
    train_step(
        model,
        optimizer,
        [(g["imgs"], g["masks_enc"], g["masks_pred"])],
        lr=opt_cfg["lr"],
        wd=opt_cfg["weight_decay"],
        momentum=g["config"]["ema_momentum"],
    )
    after = g["after_step"]
    for part in ("encoder", "predictor", "target_encoder"):
        sd = getattr(model, part).state_dict()
        for name, ref in after[part].items():
            err = (sd[name] - ref).abs().max().item()
            assert err < 1e-5, f"{part}.{name}: max abs error {err:.2e} after one step"
    with torch.no_grad():
        feats = model.target_encoder(g["imgs"])
    assert (feats - after["target_features_unmasked"]).abs().max() < 1e-5


def test_step__first_schedule_values_are_those_the_reference_stepped_with(golden_step):
    sched = golden_schedule(golden_step)
    lr, wd, m = sched.at(1)
    opt = golden_step["config"]["optimizer"]
    assert lr == pytest.approx(opt["lr"], abs=1e-12)
    assert wd == pytest.approx(opt["weight_decay"], abs=1e-12)
    assert m == golden_step["config"]["ema_momentum"]


def test_schedule__fifty_steps_of_lr_wd_momentum_match_reference(golden_step):
    sched = golden_schedule(golden_step)
    ref = golden_step["schedule_lr_wd_momentum"]
    ours = torch.tensor([sched.at(i) for i in range(1, len(ref) + 1)], dtype=torch.float64)
    assert (ours - ref).abs().max().item() < 1e-9
