"""Small models and batches for the fast-path equivalence tests (fp32, CPU, a few seconds each)."""

from __future__ import annotations

import torch

from openjepa.masks import MultiBlockMaskCollator
from openjepa.models.ijepa import IJEPA


def tiny_ijepa(seed: int = 0, pred_depth: int = 3, img: int = 32, patch: int = 4) -> IJEPA:
    torch.manual_seed(seed)
    return IJEPA.build(
        "vit_tiny",
        patch,
        img,
        pred_depth=pred_depth,
        pred_emb_dim=48,
        depth=2,
        embed_dim=48,
        num_heads=4,
        predictor_heads=4,
    )


def tiny_batches(
    n: int, batch: int = 3, img: int = 32, patch: int = 4, nenc: int = 1, npred: int = 4, seed: int = 0
) -> list:
    collator = MultiBlockMaskCollator(
        img, patch, (0.85, 1.0), (0.15, 0.2), (0.75, 1.5), nenc, npred, 4, False, seed=seed
    )
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        me, mp = collator.sample(batch, g)
        out.append((torch.randn(batch, 3, img, img, generator=g), me, mp))
    return out


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_close_dicts(a: dict, b: dict, atol: float = 1e-5, rel: float = 1e-5) -> None:
    assert set(a) == set(b)
    for k in a:
        err = (a[k] - b[k]).abs().max().item()
        scale = max(1.0, b[k].abs().max().item())
        assert err <= max(atol, rel * scale), f"{k}: max abs error {err:.3e} (scale {scale:.3g})"
