"""The one way a frozen encoder's patch tokens become features (used by evaluate and interop).

I-JEPA has no class token: the paper (A.2, and the maintainer in facebookresearch/ijepa#36) average
pools the target encoder's normed patch tokens of the last layer, or concatenates those averages for
the last 4 layers. Every pooling returns float32, whatever precision (or autocast) the encoder ran
in, so the same images give the same features on every path; callers that store many "patch"
features may narrow them afterwards.

"grid_all" is this project's addition for small images, where a global mean throws away the layout
that lets raw pixels' kNN beat every pooled encoder: each layer's tokens averaged over a GRID x GRID
split of the image (quadrants), concatenated. The quadrant means average back to "avg_all" exactly
when the token grid divides evenly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

POOLINGS = ("avg", "avg_last4", "avg_all", "grid_all", "patch")
LAST_N = 4  # layers whose token means "avg_last4" concatenates
GRID = 2  # "grid_all" averages each layer's tokens over a GRID x GRID split of the image


def grid_means(tokens: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """(B, h*w, D) tokens in row-major patch order -> (B, GRID*GRID*D) region means, cell-major."""
    b, t, d = tokens.shape
    h, w = grid_hw
    if t != h * w or h < GRID or w < GRID:
        raise ValueError(f"{t} tokens do not form a {h}x{w} patch grid of at least {GRID}x{GRID}")
    maps = tokens.float().transpose(1, 2).reshape(b, d, h, w)  # (B, D, h, w)
    cells = F.adaptive_avg_pool2d(maps, GRID)  # (B, D, GRID, GRID)
    return cells.flatten(2).transpose(1, 2).flatten(1)  # (B, GRID*GRID, D) -> (B, GRID*GRID*D)


def pool_features(encoder: nn.Module, images: torch.Tensor, pooling: str) -> torch.Tensor:
    """Run `encoder` on (B, 3, H, W) `images` and pool its tokens; float32, on the encoder's device.

    "avg" -> (B, D) mean of the last layer's normed patch tokens; "avg_last4" -> (B, 4D) the
    per-layer means of the last 4 blocks (each through the final norm), oldest layer first
    (all blocks when the encoder has fewer); "avg_all" -> (B, L*D) the same for every one of the L
    blocks (what bench/readout.py slices to compare layer choices); "grid_all" -> (B, L*GRID*GRID*D)
    every block's token means over each cell of a GRID x GRID split of the image, layer-major;
    "patch" -> (B, T, D) all normed tokens.
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
    if pooling == "grid_all":
        layers = encoder.get_intermediate_layers(images, len(encoder.blocks))  # type: ignore[operator, arg-type]
        patch = int(encoder.patch_size)  # type: ignore[arg-type]
        hw = (images.shape[-2] // patch, images.shape[-1] // patch)
        return torch.cat([grid_means(t, hw) for t in layers], dim=1)  # (B, L*GRID*GRID*D)
    if pooling == "patch":
        return encoder(images).float()  # (B, T, D)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
