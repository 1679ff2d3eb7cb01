"""Small-scale options on top of I-JEPA's loss: an anti-collapse term and layer-averaged targets.

Both are off by default (the reference recipe); each is one switch in `optimization`, ablated in
docs/results.md.
- `variance_covariance`: VICReg's variance and covariance terms (Bardes et al. 2022), as C-JEPA
  (Mo & Tong 2024) adds them to I-JEPA, applied to the per-image mean of the context encoder's tokens.
- `sigreg`: LeJEPA's Sketched Isotropic Gaussian Regulariser (Balestriero & LeCun 2025), the same
  per-image context means pushed towards an isotropic standard Gaussian, one random 1-D projection at
  a time (an Epps-Pulley test on each).
- `averaged_targets`: the mean of the target encoder's last k layers, each normalised, as data2vec
  (Baevski et al. 2022) builds its targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def variance_covariance(z: torch.Tensor, eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """VICReg's (variance, covariance) terms of (N, D) embeddings: hinge on each dim's std below 1,
    and the squared off-diagonal covariances summed and divided by D."""
    z = z.float()
    n, d = z.shape
    std = torch.sqrt(z.var(dim=0) + eps)  # (D,)
    variance = F.relu(1.0 - std).mean()
    zc = z - z.mean(dim=0)
    cov = (zc.T @ zc) / max(n - 1, 1)  # (D, D)
    off = cov - torch.diag(torch.diagonal(cov))
    return variance, off.pow(2).sum() / d


def sigreg(
    z: torch.Tensor,
    num_directions: int = 256,
    knots: int = 17,
    t_max: float = 3.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SIGReg of (N, D) embeddings: the mean over random unit directions of N times the Epps-Pulley
    distance between the projections' empirical characteristic function and N(0, 1)'s.

    About 1.06 for standard Gaussian samples at any N (the test's expected value on [-t_max, t_max]
    with t_max = 3), and growing with N for collapsed, shifted or mis-scaled ones. The directions
    are drawn afresh on every call from `generator` (default: torch's global CPU generator, which run
    checkpoints save, so resumed runs draw the same directions).
    """
    z = z.float()
    n, d = z.shape
    directions = torch.randn(d, num_directions, generator=generator).to(z.device)
    directions = directions / directions.norm(dim=0, keepdim=True)  # (D, M) unit columns
    t = torch.linspace(0.0, t_max, knots, device=z.device)  # (K,); the integrand is even in t
    x = (z @ directions).unsqueeze(-1) * t  # (N, M, K)
    gauss = torch.exp(-0.5 * t * t)  # N(0, 1)'s characteristic function, also the test's weight
    err = (x.cos().mean(dim=0) - gauss).square() + x.sin().mean(dim=0).square()  # (M, K)
    return n * 2.0 * torch.trapezoid(err * gauss, t, dim=-1).mean()


def averaged_targets(layers: list[torch.Tensor]) -> torch.Tensor:
    """data2vec-style targets from a list of (B, N, D) layer outputs: each layer-normed (no affine),
    averaged, then normed again so the target scale matches the single-layer target."""
    h = torch.stack([F.layer_norm(t, (t.size(-1),)) for t in layers]).mean(dim=0)  # (B, N, D)
    return F.layer_norm(h, (h.size(-1),))
