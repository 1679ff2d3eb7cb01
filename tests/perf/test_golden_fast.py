"""The golden reference step with every fast path on (fp32): SDPA, batched predictor fast path,
fused AdamW, foreach EMA."""

from __future__ import annotations

import torch

from openjepa.models.ijepa import set_fast_paths
from openjepa.train import make_optimizer, train_step
from openjepa.train.ema import ema_update_
from tests.train.test_golden_step import build_from_golden


def test_golden_step__with_every_fast_path_on(golden_step):
    g = golden_step
    model = set_fast_paths(build_from_golden(g), True)
    assert model.predictor.fast_path and not model.predictor_per_block
    opt_cfg = g["config"]["optimizer"]
    optimizer = make_optimizer(model.encoder, model.predictor, betas=opt_cfg["betas"], eps=opt_cfg["eps"], fused=True)
    preds = model.predict(g["imgs"], g["masks_enc"], g["masks_pred"])
    assert (preds - g["predictions"]).abs().max() < 1e-5
    train_step(
        model,
        optimizer,
        [(g["imgs"], g["masks_enc"], g["masks_pred"])],
        lr=opt_cfg["lr"],
        wd=opt_cfg["weight_decay"],
        momentum=g["config"]["ema_momentum"],
        ema_fn=ema_update_,
    )
    for part in ("encoder", "predictor", "target_encoder"):
        sd = getattr(model, part).state_dict()
        for name, ref in g["after_step"][part].items():
            err = (sd[name] - ref).abs().max().item()
            assert err < 1e-5, f"{part}.{name}: max abs error {err:.2e} after one step"


def test_golden_step__eager_baseline_configuration_too(golden_step):
    g = golden_step
    model = set_fast_paths(build_from_golden(g), False)
    preds = model.predict(g["imgs"], g["masks_enc"], g["masks_pred"])
    assert (preds - g["predictions"]).abs().max() < 1e-5
    loss = model(g["imgs"], g["masks_enc"], g["masks_pred"])
    assert abs(loss.item() - g["loss_smooth_l1"].item()) < 1e-5
    assert torch.isfinite(loss)
