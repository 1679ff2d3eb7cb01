"""The demo's dataset: which kind of object an image shows, with colour, texture, position and count as nuisances.

Each image holds 1-4 objects of one kind (square, disc, triangle, plus, ring, frame), each of its
own colour, size and place, on a random striped, noisy background. The label is the kind: a
property of shape alone, which a random encoder's pooled features (dominated by colour, texture and
how much of the image is covered) capture poorly, while I-JEPA has to learn it to predict a hidden
object's features from the visible ones. Images depend only on (n, img_size, seed, split).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from .shapes import _SHAPE_COLOURS, Transform, _place_boxes, _textured_backgrounds
from .splits import normalise_split

__all__ = ["OBJECT_KINDS", "ObjectsDataset"]

OBJECT_KINDS = ("square", "disc", "triangle", "plus", "ring", "frame")
_MAX_OBJECTS = 4


def object_mask(kind: int, s: int) -> np.ndarray:
    """Boolean (s, s) mask of one object kind filling an s-by-s box."""
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
    c = (s - 1) / 2.0
    r2 = (yy - c) ** 2 + (xx - c) ** 2
    name = OBJECT_KINDS[kind]
    if name == "square":
        return np.ones((s, s), dtype=bool)
    if name == "disc":
        return r2 <= (s / 2.0) ** 2
    if name == "triangle":  # apex up; each row widens by one pixel so it stays 4-connected
        return np.abs(xx - c) <= (yy + 1) / 2.0
    if name == "plus":  # arms a third of the box wide
        return (np.abs(xx - c) <= s / 6.0) | (np.abs(yy - c) <= s / 6.0)
    if name == "ring":  # the hole keeps at least one background pixel across at the smallest size
        return (r2 <= (s / 2.0) ** 2) & (r2 >= (0.28 * s) ** 2)
    border = max(1, s // 4)  # frame: a square outline
    inner = (yy >= border) & (yy < s - border) & (xx >= border) & (xx < s - border)
    return ~inner


class ObjectsDataset(Dataset):
    """Offline demo: 1-4 objects of one kind per image on textured backgrounds; label = the kind."""

    def __init__(
        self,
        n: int,
        img_size: int = 32,
        seed: int = 0,
        split: str = "train",
        transform: Transform = None,
        label_key: str | None = None,
    ) -> None:
        """Generate ``n`` images deterministically from (seed, split); label_key None/'kind' or 'count'."""
        if n < 1:
            raise ValueError(f"ObjectsDataset needs n >= 1, got {n}")
        if img_size < 16:
            raise ValueError(f"ObjectsDataset needs img_size >= 16 (smaller objects lose their shape), got {img_size}")
        self.split = normalise_split(split, "ObjectsDataset")
        self.n, self.img_size, self.seed = int(n), int(img_size), int(seed)
        self.transform = transform
        # separate entropy per split (and apart from the shapes dataset's streams): no overlap
        rng = np.random.default_rng([self.seed, 0 if self.split == "train" else 1, 7])
        self.images, self.kinds, self.counts = self._generate(rng)
        self.label_key = label_key
        if label_key in (None, "kind"):
            self.targets, self.classes = self.kinds, list(OBJECT_KINDS)
        elif label_key == "count":
            self.targets, self.classes = self.counts - 1, [str(i) for i in range(1, _MAX_OBJECTS + 1)]
        else:
            raise ValueError(f"ObjectsDataset label_key must be None/'kind' or 'count', got {label_key!r}")
        self.num_classes = len(self.classes)

    def _generate(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw all images; returns images (n, H, W, 3) uint8, kinds (n,) and object counts (n,)."""
        n, size = self.n, self.img_size
        smin, smax = max(6, round(0.22 * size)), max(7, round(0.38 * size))
        images = _textured_backgrounds(rng, n, size)
        kinds = rng.integers(len(OBJECT_KINDS), size=n)
        counts = rng.integers(1, _MAX_OBJECTS + 1, size=n)
        masks: dict[tuple[int, int], np.ndarray] = {}
        for i in range(n):
            kind = int(kinds[i])
            for y, x, s in _place_boxes(rng, int(counts[i]), size, smin, smax):
                mask = masks.get((kind, s))
                if mask is None:
                    mask = masks[(kind, s)] = object_mask(kind, s)
                colour = _SHAPE_COLOURS[int(rng.integers(len(_SHAPE_COLOURS)))]
                images[i, y : y + s, x : x + s][mask] = colour
        return images, kinds.astype(np.int64), counts.astype(np.int64)

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
