"""Generated test images with known near-duplicates, and a hand-crafted deterministic encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

VARIANTS = ("crop", "flip", "colour")


def source_image(i: int, size: int = 64) -> np.ndarray:
    """A distinct uint8 (size, size, 3) picture: a smooth random colour field plus a few bright discs."""
    rng = np.random.default_rng(1000 + i)
    coarse = rng.uniform(0, 255, size=(4, 4, 3)).astype(np.float32)
    field = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((size, size), Image.BICUBIC), np.float32)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(3):
        cy, cx = rng.uniform(0.2, 0.8, 2) * size
        r = rng.uniform(0.08, 0.18) * size
        colour = rng.uniform(0, 255, 3)
        field[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = colour
    return np.clip(field, 0, 255).astype(np.uint8)


def variant(img: np.ndarray, kind: str) -> np.ndarray:
    """A near-duplicate: an 85% crop resized back, a horizontal flip, or a colour shift."""
    size = img.shape[0]
    if kind == "crop":
        c = round(0.85 * size)
        o = (size - c) // 2 + 1
        return np.asarray(Image.fromarray(img[o : o + c, o - 2 : o - 2 + c]).resize((size, size), Image.BICUBIC))
    if kind == "flip":
        return img[:, ::-1].copy()
    if kind == "colour":
        return np.clip(img.astype(np.float32) * np.array([1.08, 0.95, 1.0]) + 10, 0, 255).astype(np.uint8)
    raise ValueError(kind)


def write_near_duplicates(folder: Path, n_sources: int = 8, size: int = 64) -> dict[str, list[str]]:
    """source_XX/orig.png plus its variants (mixed formats); returns {original path: [duplicate paths]}."""
    groups: dict[str, list[str]] = {}
    for i in range(n_sources):
        d = folder / f"source_{i:02d}"
        d.mkdir(parents=True, exist_ok=True)
        img = source_image(i, size)
        orig = d / "orig.png"
        Image.fromarray(img).save(orig)
        dups = []
        for kind, ext in zip(VARIANTS, (".jpg", ".png", ".webp")):
            p = d / f"{kind}{ext}"
            Image.fromarray(variant(img, kind)).save(p, quality=95) if ext != ".png" else Image.fromarray(
                variant(img, kind)
            ).save(p)
            dups.append(str(p))
        groups[str(orig)] = dups
    return groups


class HandcraftedEncoder(nn.Module):
    """A deterministic stand-in for a frozen encoder, for testing the search engine on real files.

    Its one token per image: a flip-symmetric 8x8 layout of each colour channel, standardised per
    image (so that brightness and contrast shifts barely move it); "avg" pooling gives that token.
    `.preprocess`, `.meta` and `forward` -> (B, T, D) tokens mirror `openjepa.interop.Encoder`.
    """

    def __init__(self, tag: str = "handcrafted-v1") -> None:
        super().__init__()
        self.meta = {"fingerprint": tag, "source": None, "format": "test", "which": None}

    @staticmethod
    def preprocess(im: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(im.resize((32, 32), Image.BILINEAR), np.float32) / 255.0).permute(2, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        small = F.adaptive_avg_pool2d(x, 8)
        sym = 0.5 * (small + small.flip(-1))  # a horizontal flip does not move it
        f = sym.flatten(1)
        return ((f - f.mean(1, keepdim=True)) / f.std(1, keepdim=True).clamp_min(1e-6))[:, None]  # (B, 1, 192)
