"""The small-scale objective options: VICReg terms on the context means, layer-averaged targets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from openjepa.models.ijepa import IJEPA, ijepa_loss
from openjepa.models.regularizers import averaged_targets, variance_covariance

MASKS_ENC = [torch.tensor([[0, 1, 2, 4, 5, 6]] * 4)]
MASKS_PRED = [torch.tensor([[10, 11]] * 4), torch.tensor([[14, 15]] * 4)]


def _model(**kw) -> IJEPA:
    torch.manual_seed(0)
    return IJEPA.build("vit_tiny", 8, 32, pred_depth=1, pred_emb_dim=48, depth=2, **kw)


def test_variance_covariance__zero_for_whitened_data_and_large_for_collapse_or_correlation():
    white = torch.randn(20000, 8)
    variance, covariance = variance_covariance(white)
    assert variance < 0.02 and covariance < 0.01
    collapsed_var, collapsed_cov = variance_covariance(torch.ones(64, 8))
    assert collapsed_var == pytest.approx(1 - 1e-2, abs=1e-6) and collapsed_cov == 0
    x = torch.randn(20000, 1)
    _, cov_corr = variance_covariance(torch.cat([x, x], dim=1))  # off-diagonal cov 1, twice, over D=2
    assert cov_corr == pytest.approx(1.0, rel=0.05)


def test_averaged_targets__one_layer_is_the_plain_normed_target_and_layers_are_averaged():
    a, b = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    assert torch.allclose(averaged_targets([a]), F.layer_norm(a, (16,)), atol=1e-5)
    mean = (F.layer_norm(a, (16,)) + F.layer_norm(b, (16,))) / 2
    assert torch.allclose(averaged_targets([a, b]), F.layer_norm(mean, (16,)), atol=1e-6)


def test_target_layers__targets_come_from_the_last_k_blocks_of_the_target_encoder():
    model = _model(target_layers=2)
    imgs = torch.randn(4, 3, 32, 32)
    layers = model.target_encoder.get_intermediate_layers(imgs, 2)
    expected = averaged_targets(layers)[:, [10, 11]]  # first target block of every image
    got = model.targets(imgs, MASKS_ENC, MASKS_PRED)
    assert torch.allclose(got[:4], expected, atol=1e-6)
    assert not torch.allclose(got, _model().targets(imgs, MASKS_ENC, MASKS_PRED), atol=1e-3)


def test_var_cov_weights__add_exactly_the_weighted_terms_of_the_context_means_and_train_the_encoder():
    imgs = torch.randn(4, 3, 32, 32)
    plain, reg = _model(), _model(var_weight=0.5, cov_weight=0.1)
    z = plain.encoder(imgs, MASKS_ENC)
    base = ijepa_loss(plain._predict_from(z, MASKS_ENC, MASKS_PRED), plain.targets(imgs, MASKS_ENC, MASKS_PRED))
    variance, covariance = variance_covariance(z.mean(dim=1))
    loss = reg(imgs, MASKS_ENC, MASKS_PRED)
    assert torch.allclose(plain(imgs, MASKS_ENC, MASKS_PRED), base)
    assert torch.allclose(loss, base + 0.5 * variance + 0.1 * covariance, atol=1e-6)
    loss.backward()
    assert reg.encoder.patch_embed.proj.weight.grad.abs().sum() > 0


def test_options__round_trip_through_arch_and_stay_out_of_default_checkpoints():
    assert not {"target_layers", "var_weight", "cov_weight"} & set(_model().arch())
    arch = _model(target_layers=2, var_weight=1.0).arch()
    rebuilt = IJEPA.from_arch(arch)
    assert (rebuilt.target_layers, rebuilt.var_weight, rebuilt.cov_weight) == (2, 1.0, 0.0)


@pytest.mark.parametrize("kw", [{"target_layers": 0}, {"target_layers": 3}, {"var_weight": -1.0}])
def test_options__out_of_range_values_are_refused_with_the_allowed_range(kw):
    with pytest.raises(ValueError, match="target_layers|var_weight"):
        _model(**kw)
