"""The small-scale objective options: VICReg terms and SIGReg on the context means, layer-averaged targets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from openjepa.models.ijepa import IJEPA, ijepa_loss
from openjepa.models.regularizers import averaged_targets, sigreg, variance_covariance

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


def _sigreg_brute_force(z: torch.Tensor, directions: torch.Tensor, t_max: float = 3.0, knots: int = 17) -> float:
    """The same statistic with complex numbers over the whole symmetric interval, one direction at a time."""
    t = torch.linspace(-t_max, t_max, 2 * knots - 1, dtype=torch.float64)
    stats = []
    for a in directions.T.double():
        s = z.double() @ (a / a.norm())  # (N,)
        ecf = torch.exp(1j * s[:, None] * t[None, :]).mean(dim=0)  # (2K - 1,)
        err = (ecf - torch.exp(-0.5 * t**2)).abs() ** 2
        stats.append(len(z) * torch.trapezoid(err * torch.exp(-0.5 * t**2), t))
    return float(torch.stack(stats).mean())


def test_sigreg__matches_a_complex_brute_force_with_the_same_directions():
    z = torch.randn(50, 6, generator=torch.Generator().manual_seed(0)) * 1.5 + 0.3
    got = sigreg(z, num_directions=7, generator=torch.Generator().manual_seed(1))
    directions = torch.randn(6, 7, generator=torch.Generator().manual_seed(1))
    assert float(got) == pytest.approx(_sigreg_brute_force(z, directions), rel=1e-4)


def test_sigreg__near_its_gaussian_value_for_gaussian_data_and_large_for_collapse_shift_or_scale():
    g = torch.Generator().manual_seed(0)
    gaussian = torch.randn(512, 16, generator=g)
    # E[N |ecf - cf|^2] = 1 - exp(-t^2) for N(0, 1) samples: integral against exp(-t^2/2) on [-3, 3] = 1.06
    assert float(sigreg(gaussian, generator=g)) == pytest.approx(1.06, abs=0.2)
    for bad in (torch.zeros(512, 16), gaussian * 3.0, gaussian + 2.0, gaussian[:, :1].expand(512, 16)):
        assert float(sigreg(bad, generator=g)) > 10.0


def test_sigreg_weight__adds_the_weighted_term_and_its_gradient_spreads_collapsed_means():
    imgs = torch.randn(4, 3, 32, 32)
    plain, reg = _model(), _model(sigreg_weight=0.3)
    base = plain(imgs, MASKS_ENC, MASKS_PRED)
    torch.manual_seed(5)
    loss = reg(imgs, MASKS_ENC, MASKS_PRED)
    torch.manual_seed(5)  # the same directions: they come from the global generator
    expected = base + 0.3 * sigreg(reg.encoder(imgs, MASKS_ENC).mean(dim=1))
    assert torch.allclose(loss, expected, atol=1e-5)
    loss.backward()
    assert reg.encoder.patch_embed.proj.weight.grad.abs().sum() > 0
    # Nearly collapsed embeddings: one gradient step spreads them (exact collapse is stationary, as for VICReg).
    z = (0.01 * torch.randn(64, 8, generator=torch.Generator().manual_seed(2))).requires_grad_()
    sigreg(z, generator=torch.Generator().manual_seed(3)).backward()
    assert z.grad is not None
    z, grad = z.detach(), z.grad
    assert float((z - grad).std()) > 1.2 * float(z.std())  # the gradient is about -0.4 z here


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


def test_reg_scale__at_one_is_bitwise_the_unscheduled_loss_and_scales_only_the_terms():
    imgs = torch.randn(4, 3, 32, 32)
    reg = _model(var_weight=0.5, cov_weight=0.04)
    z = reg.encoder(imgs, MASKS_ENC)
    base = ijepa_loss(reg._predict_from(z, MASKS_ENC, MASKS_PRED), reg.targets(imgs, MASKS_ENC, MASKS_PRED))
    variance, covariance = variance_covariance(z.mean(dim=1))
    # the expression the loss had before the schedule existed, Python floats and all
    assert torch.equal(reg(imgs, MASKS_ENC, MASKS_PRED), base + 0.5 * variance + 0.04 * covariance)
    reg.set_reg_scale(0.25)
    scaled = reg(imgs, MASKS_ENC, MASKS_PRED)
    assert torch.allclose(scaled, base + 0.25 * (0.5 * variance + 0.04 * covariance), atol=1e-6)
    reg.set_reg_scale(0.0)
    assert torch.allclose(reg(imgs, MASKS_ENC, MASKS_PRED), base, atol=1e-7)
    assert "reg_scale" not in reg.state_dict()  # recomputed from the step on resume, never saved


def test_options__round_trip_through_arch_and_stay_out_of_default_checkpoints():
    assert not {"target_layers", "var_weight", "cov_weight", "sigreg_weight"} & set(_model().arch())
    arch = _model(target_layers=2, var_weight=1.0, sigreg_weight=0.05).arch()
    rebuilt = IJEPA.from_arch(arch)
    assert (rebuilt.target_layers, rebuilt.var_weight, rebuilt.cov_weight, rebuilt.sigreg_weight) == (2, 1.0, 0.0, 0.05)


@pytest.mark.parametrize(
    "kw", [{"target_layers": 0}, {"target_layers": 3}, {"var_weight": -1.0}, {"sigreg_weight": -0.1}]
)
def test_options__out_of_range_values_are_refused_with_the_allowed_range(kw):
    with pytest.raises(ValueError, match="target_layers|sigreg_weight must be >= 0"):
        _model(**kw)
