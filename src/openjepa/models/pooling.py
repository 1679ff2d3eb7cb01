"""The one way a frozen encoder's patch tokens become features (used by evaluate and interop).

I-JEPA has no class token: the paper (A.2, and the maintainer in facebookresearch/ijepa#36) average
pools the target encoder's normed patch tokens of the last layer, or concatenates those averages for
the last 4 layers. Every pooling returns float32, whatever precision (or autocast) the encoder ran
in, so the same images give the same features on every path; callers that store many "patch"
features may narrow them afterwards.
"""

from __future__ import annotations

import torch
from torch import nn

POOLINGS = ("avg", "avg_last4", "avg_all", "patch")
LAST_N = 4  # layers whose token means "avg_last4" concatenates


def pool_features(encoder: nn.Module, images: torch.Tensor, pooling: str) -> torch.Tensor:
    """Run `encoder` on (B, 3, H, W) `images` and pool its tokens; float32, on the encoder's device.

    "avg" -> (B, D) mean of the last layer's normed patch tokens; "avg_last4" -> (B, 4D) the
    per-layer means of the last 4 blocks (each through the final norm), oldest layer first
    (all blocks when the encoder has fewer); "avg_all" -> (B, L*D) the same for every one of the L
    blocks (what bench/readout.py slices to compare layer choices); "patch" -> (B, T, D) all normed tokens.
    """
    if pooling == "avg":
        return encoder(images).float().mean(dim=1)  # (B, T, D) -> (B, D)
    if pooling == "avg_last4":
        layers = encoder.get_intermediate_layers(images, LAST_N)  # type: ignore[operator]
        # [mean(L-3) | mean(L-2) | mean(L-1) | mean(L)], each (B, D) -> (B, 4D)
        return torch.cat([t.float().mean(dim=1) for t in layers], dim=1)
    if pooling == "avg_all":
        layers = encoder.get_intermediate_layers(images, len(encoder.blocks))  # type: ignore[operator, arg-type]
        return torch.cat([t.float().mean(dim=1) for t in layers], dim=1)  # (B, L*D)
    if pooling == "patch":
        return encoder(images).float()  # (B, T, D)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
