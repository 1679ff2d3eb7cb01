"""Small-scale options on top of I-JEPA's loss: an anti-collapse term and layer-averaged targets.

Both are off by default (the reference recipe); each is one switch in `optimization`, ablated in
docs/results.md.
- `variance_covariance`: VICReg's variance and covariance terms (Bardes et al. 2022), as C-JEPA
  (Mo & Tong 2024) adds them to I-JEPA, applied to the per-image mean of the context encoder's tokens.
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


def averaged_targets(layers: list[torch.Tensor]) -> torch.Tensor:
    """data2vec-style targets from a list of (B, N, D) layer outputs: each layer-normed (no affine),
    averaged, then normed again so the target scale matches the single-layer target."""
    h = torch.stack([F.layer_norm(t, (t.size(-1),)) for t in layers]).mean(dim=0)  # (B, N, D)
    return F.layer_norm(h, (h.size(-1),))
