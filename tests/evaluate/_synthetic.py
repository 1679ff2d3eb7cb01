"""Tiny synthetic data and a stand-in encoder for the evaluation tests."""

from __future__ import annotations

import torch
import torch.nn as nn


def make_blobs(
    n: int,
    *,
    num_classes: int = 5,
    dim: int = 32,
    sep: float = 6.0,
    noise: float = 1.0,
    seed: int = 0,
    center_seed: int = 1234,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs: fixed class centres (by center_seed), samples drawn by seed; balanced labels."""
    centers = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(center_seed))
    centers = sep * centers / centers.norm(dim=1, keepdim=True)
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    y = y[torch.randperm(n, generator=g)]
    x = centers[y] + noise * torch.randn(n, dim, generator=g)
    return x, y


def make_position_task(
    n: int,
    *,
    num_classes: int = 4,
    tokens: int = 8,
    dim: int = 32,
    signal: float = 4.0,
    noise: float = 0.3,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens = fixed positional vector + noise; class c adds one fixed signal vector at token c.

    The token mean is the same random variable for every class, so average pooling is at chance;
    attention can find the signal token and read its position from its positional vector.
    """
    pos = torch.randn(tokens, dim, generator=torch.Generator().manual_seed(123))
    sig = torch.randn(dim, generator=torch.Generator().manual_seed(7))
    sig = signal * sig / sig.norm()
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, num_classes, (n,), generator=g)
    x = pos + noise * torch.randn(n, tokens, dim, generator=g)
    x[torch.arange(n), y] += sig
    return x.to(torch.float16), y


class StandInEncoder(nn.Module):
    """Minimal encoder with the openjepa interface: patch tokens after a final LayerNorm."""

    def __init__(self, embed_dim: int = 16, patch: int = 4, depth: int = 5) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.patch_embed = nn.Conv2d(3, embed_dim, patch, stride=patch)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.GELU()) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(x).flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._tokens(x)
        for blk in self.blocks:
            x = x + blk(x)
        return self.norm(x)

    def get_intermediate_layers(self, x: torch.Tensor, n: int = 1) -> list[torch.Tensor]:
        x = self._tokens(x)
        outs = []
        for i, blk in enumerate(self.blocks):
            x = x + blk(x)
            if i >= len(self.blocks) - n:
                outs.append(self.norm(x))
        return outs


class ImageDataset(torch.utils.data.Dataset):
    """Random images with integer labels, deterministic per index."""

    def __init__(self, n: int, size: int = 16, num_classes: int = 3) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, size, size, generator=g)
        self.labels = torch.arange(n) % num_classes

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])
