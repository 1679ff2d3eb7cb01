"""Fixed 2-D sin-cos position embeddings, laid out exactly as the reference I-JEPA (MAE recipe)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sincos_1d(embed_dim: int, positions: torch.Tensor) -> torch.Tensor:
    """1-D sin-cos table: (len(positions), embed_dim) as [sin(pos*w), cos(pos*w)]."""
    if embed_dim % 2:
        raise ValueError(f"sin-cos embedding needs an even width, got {embed_dim}")
    omega = torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    out = positions.to(torch.float64).reshape(-1)[:, None] * omega[None, :]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_2d(embed_dim: int, grid_size: int | tuple[int, int]) -> torch.Tensor:
    """2-D sin-cos table (gh*gw, embed_dim), token index row*gw + col.

    The first half of the channels encodes the column and the second half the row: the
    reference builds its meshgrid w-first and names the halves the other way round, and
    released checkpoints store exactly this table.
    """
    gh, gw = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
    if embed_dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs a width divisible by 4, got {embed_dim}")
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    emb_col = sincos_1d(embed_dim // 2, cols)
    emb_row = sincos_1d(embed_dim // 2, rows)
    return torch.cat([emb_col, emb_row], dim=1).to(torch.float32)


def resize_pos_embed(pos_embed: torch.Tensor, new_grid: tuple[int, int], mode: str = "sincos") -> torch.Tensor:
    """Position table (1, N, D) for another grid: recomputed sin-cos (exact) or bicubic-interpolated."""
    d = pos_embed.shape[-1]
    if mode == "sincos":
        return sincos_2d(d, new_grid).to(pos_embed)[None]
    if mode != "interpolate":
        raise ValueError(f"pos-embed resize mode must be 'sincos' or 'interpolate', got {mode!r}")
    n = pos_embed.shape[1]
    g = int(round(n**0.5))
    if g * g != n:
        raise ValueError(f"cannot interpolate a non-square position table of {n} tokens")
    grid = pos_embed.reshape(1, g, g, d).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(1, -1, d).to(pos_embed.dtype)
