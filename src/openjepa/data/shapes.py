"""The offline demo dataset: 1-4 coloured shapes on textured backgrounds, generated, never read from disk.

Labels are the number of shapes (`label_key=None` or "count") or the quadrant of the largest one
("quadrant"); the images depend only on (seed, split).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from .splits import normalise_split

__all__ = ["ShapesDataset"]

Transform = Callable[[Image.Image], Any] | None

# fully saturated colours, far from the low-saturation backgrounds so shapes stay visible
_SHAPE_COLOURS = np.array(
    [
        [230, 25, 25],
        [25, 200, 40],
        [30, 60, 235],
        [240, 220, 20],
        [220, 30, 220],
        [20, 210, 220],
        [245, 130, 10],
    ],
    dtype=np.uint8,
)
_SHAPE_KINDS = ("square", "disc", "triangle")
_QUADRANTS = ["top-left", "top-right", "bottom-left", "bottom-right"]
_MAX_SHAPES = 4


def _shape_mask(kind: int, s: int, cache: dict) -> np.ndarray:
    """Boolean (s, s) mask of one shape kind filling an s-by-s box (cached per kind and size)."""
    key = (kind, s)
    m = cache.get(key)
    if m is None:
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
        c = (s - 1) / 2.0
        if kind == 0:
            m = np.ones((s, s), dtype=bool)
        elif kind == 1:
            m = (yy - c) ** 2 + (xx - c) ** 2 <= (s / 2.0) ** 2
        else:  # apex-up triangle; each row widens by one pixel so it stays 4-connected
            m = np.abs(xx - c) <= (yy + 1) / 2.0
        cache[key] = m
    return m


def _boxes_apart(a: tuple[int, int, int], b: tuple[int, int, int]) -> bool:
    """True if boxes (y, x, size) leave at least one empty pixel row or column between them."""
    ay, ax, as_ = a
    by, bx, bs = b
    return ax + as_ < bx or bx + bs < ax or ay + as_ < by or by + bs < ay


def _place_boxes(rng: np.random.Generator, k: int, size: int, smin: int, smax: int) -> list:
    """Random non-touching square boxes (y, x, s); falls back to one box per quadrant."""
    boxes: list = []
    for _ in range(k):
        for _try in range(30):
            s = int(rng.integers(smin, smax + 1))
            y, x = (int(v) for v in rng.integers(0, size - s + 1, size=2))
            if all(_boxes_apart((y, x, s), b) for b in boxes):
                boxes.append((y, x, s))
                break
        else:
            break
    if len(boxes) == k:
        return boxes
    # crowded draw: quadrant cells always fit up to four separated boxes
    cell = size // 2
    hi = max(1, cell - 1)
    lo = min(smin, hi)
    out = []
    for q in rng.permutation(_MAX_SHAPES)[:k]:
        s = int(rng.integers(lo, hi + 1))
        y = (q // 2) * cell + int(rng.integers(0, cell - s))
        x = (q % 2) * cell + int(rng.integers(0, cell - s))
        out.append((y, x, s))
    return out


def _textured_backgrounds(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """n low-saturation backgrounds: grey level + small tint + oriented stripes + pixel noise."""
    f32 = np.float32
    grey = rng.uniform(50, 200, size=(n, 1, 1, 1)).astype(f32)
    tint = rng.uniform(-15, 15, size=(n, 1, 1, 3)).astype(f32)
    amp = rng.uniform(8, 35, size=(n, 1, 1)).astype(f32)
    freq = rng.uniform(1, 6, size=(n, 1, 1)).astype(f32)
    theta = rng.uniform(0, np.pi, size=(n, 1, 1)).astype(f32)
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1)).astype(f32)
    noise_sd = rng.uniform(2, 10, size=(n, 1, 1)).astype(f32)
    yy, xx = np.mgrid[0:size, 0:size].astype(f32) / f32(size)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    chunk = max(1, 2**20 // (size * size))  # bounds the float32 temporaries to a few MB
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        arg = (f32(2 * np.pi) * freq[a:b]) * (np.cos(theta[a:b]) * xx + np.sin(theta[a:b]) * yy)
        texture = amp[a:b] * np.sin(arg + phase[a:b])
        texture += noise_sd[a:b] * rng.standard_normal((b - a, size, size), dtype=f32)
        # the texture is shared by all channels, so it adds structure without adding colour
        img = (grey[a:b] + tint[a:b]) + texture[..., None]
        np.clip(img, 0, 255, out=img)
        np.rint(img, out=img)
        out[a:b] = img
    return out


class ShapesDataset(Dataset):
    """Offline demo: 1-4 coloured shapes on textured backgrounds; label = number of shapes."""

    def __init__(
        self,
        n: int,
        img_size: int = 32,
        seed: int = 0,
        split: str = "train",
        transform: Transform = None,
        label_key: str | None = None,
    ) -> None:
        """Generate ``n`` images deterministically from (seed, split); no files are read or written."""
        if n < 1:
            raise ValueError(f"ShapesDataset needs n >= 1, got {n}")
        if img_size < 8:
            raise ValueError(f"ShapesDataset needs img_size >= 8, got {img_size}")
        self.split = normalise_split(split, "ShapesDataset")
        self.n, self.img_size, self.seed = int(n), int(img_size), int(seed)
        self.transform = transform
        # separate SeedSequence entropy per split: train and test streams never overlap
        rng = np.random.default_rng([self.seed, 0 if self.split == "train" else 1])
        self.images, self.n_shapes, self.positions, self.boxes = self._generate(rng)
        self.label_key = label_key
        if label_key in (None, "count"):
            self.targets = (self.n_shapes - 1).astype(np.int64)
            self.classes = [str(i) for i in range(1, _MAX_SHAPES + 1)]
        elif label_key == "quadrant":
            self.targets = self.positions.astype(np.int64)
            self.classes = list(_QUADRANTS)
        else:
            raise ValueError(f"ShapesDataset label_key must be None/'count' or 'quadrant', got {label_key!r}")
        self.num_classes = len(self.classes)

    def _generate(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Draw all images; returns images, shape counts, largest-shape quadrants and boxes."""
        n, size = self.n, self.img_size
        smin = max(3, int(round(0.16 * size)))
        smax = max(smin, int(round(0.34 * size)))
        images = _textured_backgrounds(rng, n, size)
        counts = rng.integers(1, _MAX_SHAPES + 1, size=n)
        quadrant = np.zeros(n, dtype=np.int64)
        # (y, x, size, kind) per drawn shape; -1 rows for absent shapes
        boxes = np.full((n, _MAX_SHAPES, 4), -1, dtype=np.int32)
        cache: dict = {}
        for i in range(n):
            k = int(counts[i])
            best_area, best_q = -1, 0
            for j, (y, x, s) in enumerate(_place_boxes(rng, k, size, smin, smax)):
                kind = int(rng.integers(len(_SHAPE_KINDS)))
                colour = _SHAPE_COLOURS[int(rng.integers(len(_SHAPE_COLOURS)))]
                mask = _shape_mask(kind, s, cache)
                images[i, y : y + s, x : x + s][mask] = colour
                boxes[i, j] = (y, x, s, kind)
                area = int(mask.sum())
                if area > best_area:  # ties keep the first drawn shape
                    ys, xs = np.nonzero(mask)
                    # integer test of "centroid >= (size-1)/2" avoids float ties on the midline
                    bottom = 2 * (int(ys.sum()) + y * area) >= (size - 1) * area
                    right = 2 * (int(xs.sum()) + x * area) >= (size - 1) * area
                    best_area, best_q = area, 2 * int(bottom) + int(right)
            quadrant[i] = best_q
        return images, counts.astype(np.int64), quadrant, boxes

    def __len__(self) -> int:
        """Number of generated images."""
        return self.n

    def __getitem__(self, index: int) -> tuple[Any, int]:
        """Return ``(image, label)`` for one position."""
        img = Image.fromarray(self.images[index])
        return (self.transform(img) if self.transform is not None else img), int(self.targets[index])

    def __repr__(self) -> str:
        """Short description with size, seed and split."""
        return (
            f"{type(self).__name__}(n={self.n}, img_size={self.img_size}, seed={self.seed}, "
            f"split={self.split!r}, label_key={self.label_key!r})"
        )
