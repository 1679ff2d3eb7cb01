"""Datasets: packed ``.npz`` arrays, image folders (ImageNet layout) and the offline shapes demo.

Every dataset returns ``(transform(img) if transform else img, int(label))`` where ``img`` is a
PIL RGB image, and exposes ``classes``, ``targets`` (np.ndarray) and ``num_classes``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

__all__ = [
    "NpzImageDataset",
    "ImageFolderDataset",
    "ShapesDataset",
    "build_dataset",
    "IMG_EXTENSIONS",
]

logger = logging.getLogger("openjepa.data")

PathLike = Union[str, os.PathLike]
Transform = Optional[Callable[[Image.Image], Any]]


def _normalise_split(split: str, where: str) -> str:
    """Map a split name to "train" or "test" ("val" is accepted as an alias of "test")."""
    s = str(split).lower()
    if s == "val":
        return "test"
    if s not in ("train", "test"):
        raise ValueError(f"{where}: split must be 'train' or 'test' (or 'val'), got {split!r}")
    return s


def _array_to_rgb(arr: np.ndarray) -> Image.Image:
    """Convert one (H, W, C) uint8 array with C in {1, 3, 4} to a PIL RGB image."""
    c = arr.shape[-1]
    if c == 3:
        return Image.fromarray(np.ascontiguousarray(arr))
    if c == 1:
        return Image.fromarray(np.ascontiguousarray(arr[..., 0])).convert("RGB")
    return Image.fromarray(np.ascontiguousarray(arr)).convert("RGB")


# --------------------------------------------------------------------------------------------
# .npz arrays
# --------------------------------------------------------------------------------------------


class NpzImageDataset(Dataset):
    """Images and labels from a ``.npz`` file (keys ``x_train``/``y_train``/``x_test``/``y_test``)."""

    def __init__(
        self,
        path: PathLike,
        split: str = "train",
        transform: Transform = None,
        label_key: Optional[str] = None,
        indices: Optional[Sequence[int]] = None,
    ) -> None:
        """Load one split's uint8 images and the chosen label array; see the module docstring."""
        self.path = Path(path).expanduser()
        self.split = _normalise_split(split, f"NpzImageDataset({self.path})")
        self.transform = transform
        self.label_key = label_key
        if not self.path.is_file():
            raise FileNotFoundError(f"npz dataset not found: {self.path}")
        try:
            npz = np.load(self.path, allow_pickle=False)
        except Exception as exc:  # zipfile/pickle errors say little about which file was bad
            raise ValueError(f"could not read {self.path} as a .npz archive: {exc}") from exc
        with npz:
            keys = list(npz.files)
            x_key = f"x_{self.split}"
            if label_key is None:
                y_candidates = [f"y_{self.split}"]
                names_key = "class_names"
            else:
                # the README's extra labels are named y_<split>_<key>; raw arrays like
                # n_objects_<split> or a full key name are accepted too
                y_candidates = [f"y_{self.split}_{label_key}", f"{label_key}_{self.split}", label_key]
                names_key = f"{label_key}_class_names"
            y_key = next((k for k in y_candidates if k in keys), None)
            missing = [] if x_key in keys else [x_key]
            if y_key is None:
                missing.append(" or ".join(y_candidates))
            if missing:
                expected = [x_key, y_candidates[0], names_key]
                raise ValueError(
                    f"{self.path}: missing key(s) {missing}; expected keys {expected}; "
                    f"keys present: {sorted(keys)}")
            images = npz[x_key]
            labels = npz[y_key]
            names = npz[names_key] if names_key in keys else None

        if images.ndim == 3:  # (N, H, W) greyscale without a channel axis
            images = images[..., None]
        if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
            raise ValueError(f"{self.path}: {x_key} must have shape (N, H, W, C) with C in 1/3/4, "
                             f"got {images.shape}")
        if images.dtype != np.uint8:
            raise ValueError(f"{self.path}: {x_key} must be uint8 (0-255), got {images.dtype}")
        labels = np.asarray(labels).reshape(-1)
        if labels.shape[0] != images.shape[0]:
            raise ValueError(f"{self.path}: {y_key} has {labels.shape[0]} labels but {x_key} has "
                             f"{images.shape[0]} images")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{self.path}: {y_key} must hold integer labels, got {labels.dtype}")

        # the uint8 array is kept as is (a few hundred MB at most); PIL conversion is per item
        self.images = images
        self._index: Optional[np.ndarray] = None
        if indices is not None:
            idx = np.asarray(indices, dtype=np.int64).reshape(-1)
            n = images.shape[0]
            if idx.size and (idx.min() < -n or idx.max() >= n):
                raise IndexError(f"{self.path}: indices out of range for {n} {self.split} images")
            self._index = np.where(idx < 0, idx + n, idx)
            labels = labels[self._index]
        self.targets = labels.astype(np.int64)
        if names is not None:
            self.classes = [str(c) for c in np.asarray(names).reshape(-1)]
        else:
            top = int(labels.max()) + 1 if labels.size else 0
            self.classes = [str(i) for i in range(top)]
        self.num_classes = len(self.classes)

    def __len__(self) -> int:
        """Number of images in this split (after ``indices``)."""
        return int(self.targets.shape[0])

    def __getitem__(self, index: int) -> tuple[Any, int]:
        """Return ``(image, label)`` for one position."""
        i = int(self._index[index]) if self._index is not None else int(index)
        img = _array_to_rgb(self.images[i])
        return (self.transform(img) if self.transform is not None else img), int(self.targets[index])

    def __repr__(self) -> str:
        """Short description with the file, split and size."""
        return (f"{type(self).__name__}({str(self.path)!r}, split={self.split!r}, n={len(self)}, "
                f"classes={self.num_classes}, label_key={self.label_key!r})")


# --------------------------------------------------------------------------------------------
# image folders
# --------------------------------------------------------------------------------------------

_SPLIT_ALIASES = {"test": ("test", "val"), "val": ("val", "test")}
_SPLIT_NAMES = ("train", "val", "test")


def _read_subset_file(path: PathLike) -> tuple[frozenset, frozenset]:
    """Read a subset list: returns (bare file names, 'class/file' relative names)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"subset file not found: {p}")
    names, rel = set(), set()
    for line in p.read_text().splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        parts = entry.replace("\\", "/").split("/")
        if len(parts) == 1:
            names.add(parts[0])
        else:
            rel.add("/".join(parts[-2:]))
    return frozenset(names), frozenset(rel)


class _IsListedImage:
    """Picklable ``is_valid_file``: an image extension and, with a subset, a listed name."""

    def __init__(self, subset: Optional[tuple[frozenset, frozenset]]) -> None:
        """Store the subset names (or None for every image)."""
        self.subset = subset

    def __call__(self, path: str) -> bool:
        """True when the file should be part of the dataset."""
        if not path.lower().endswith(IMG_EXTENSIONS):
            return False
        if self.subset is None:
            return True
        names, rel = self.subset
        p = Path(path)
        return p.name in names or f"{p.parent.name}/{p.name}" in rel


def _load_rgb(path: str) -> Image.Image:
    """Open an image file and decode it fully as RGB (so corrupt files fail here, not later)."""
    with open(path, "rb") as f:
        img = Image.open(f)
        return img.convert("RGB")


class ImageFolderDataset(ImageFolder):
    """torchvision ``ImageFolder`` (``root[/split]/<class>/<image>``) that skips unreadable files."""

    def __init__(
        self,
        root: PathLike,
        split: Optional[str] = "train",
        transform: Transform = None,
        subset_file: Optional[PathLike] = None,
    ) -> None:
        """Index ``root/split`` (or ``root``), optionally keeping only files named in ``subset_file``."""
        root_path = Path(root).expanduser()
        if not root_path.is_dir():
            raise FileNotFoundError(
                f"data folder not found: {root_path}; set data.root_path/data.image_folder "
                f"or pass --data PATH")
        folder = self._resolve_split_folder(root_path, split)
        self.split = split
        self.subset_file = str(subset_file) if subset_file is not None else None
        subset = _read_subset_file(subset_file) if subset_file is not None else None
        accepted = ", ".join(IMG_EXTENSIONS)
        what = f" listed in subset file {subset_file}" if subset is not None else ""
        try:
            # allow_empty: a subset may leave some classes without images; only total emptiness fails
            super().__init__(str(folder), transform=transform, loader=_load_rgb,
                             is_valid_file=_IsListedImage(subset), allow_empty=True)
        except FileNotFoundError as exc:  # torchvision's "Couldn't find any class folder"
            raise ValueError(
                f"no images found in {folder}: expected class sub-folders ({folder}/<class>/<image>) "
                f"holding files with extensions {accepted}{what} ({exc})") from exc
        if not self.samples:
            raise ValueError(
                f"no images found in {folder}: expected class sub-folders ({folder}/<class>/<image>) "
                f"holding files with extensions {accepted}{what}")
        self.folder = folder
        self.targets = np.asarray(self.targets, dtype=np.int64)
        self.num_classes = len(self.classes)
        self.num_skipped = 0
        self._bad_files: set[str] = set()

    @staticmethod
    def _resolve_split_folder(root: Path, split: Optional[str]) -> Path:
        """Pick ``root/split`` (test and val stand in for each other) or fall back to ``root``."""
        if not split:
            return root
        for name in _SPLIT_ALIASES.get(split, (split,)):
            if (root / name).is_dir():
                return root / name
        present = [n for n in _SPLIT_NAMES if (root / n).is_dir()]
        if present:
            # falling back to root here would treat the split folders themselves as classes
            raise ValueError(f"split folder {root / split} not found; {root} has split folders "
                             f"{present}; pick one of those splits")
        return root

    def __getitem__(self, index: int) -> tuple[Any, int]:
        """Return ``(image, label)``; an unreadable file is logged once and the next one is used."""
        n = len(self.samples)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        index %= n
        for step in range(n):
            path, target = self.samples[(index + step) % n]
            if path in self._bad_files:
                continue
            try:
                img = self.loader(path)
            except Exception as exc:  # any decode failure: a bad file must not stop a long run
                self._bad_files.add(path)
                self.num_skipped = len(self._bad_files)
                logger.warning("skipping unreadable image %s (%s: %s)", path, type(exc).__name__, exc)
                continue
            if self.transform is not None:
                img = self.transform(img)
            if self.target_transform is not None:
                target = self.target_transform(target)
            return img, int(target)
        raise RuntimeError(f"every image file under {self.folder} is unreadable "
                           f"({len(self._bad_files)} files failed to load); check the data folder")


# --------------------------------------------------------------------------------------------
# offline demo: coloured shapes on textured backgrounds
# --------------------------------------------------------------------------------------------

# fully saturated colours, far from the low-saturation backgrounds so shapes stay visible
_SHAPE_COLOURS = np.array([
    [230, 25, 25], [25, 200, 40], [30, 60, 235], [240, 220, 20],
    [220, 30, 220], [20, 210, 220], [245, 130, 10],
], dtype=np.uint8)
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
        label_key: Optional[str] = None,
    ) -> None:
        """Generate ``n`` images deterministically from (seed, split); no files are read or written."""
        if n < 1:
            raise ValueError(f"ShapesDataset needs n >= 1, got {n}")
        if img_size < 8:
            raise ValueError(f"ShapesDataset needs img_size >= 8, got {img_size}")
        self.split = _normalise_split(split, "ShapesDataset")
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
            raise ValueError(f"ShapesDataset label_key must be None/'count' or 'quadrant', "
                             f"got {label_key!r}")
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
                images[i, y:y + s, x:x + s][mask] = colour
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
        return (f"{type(self).__name__}(n={self.n}, img_size={self.img_size}, seed={self.seed}, "
                f"split={self.split!r}, label_key={self.label_key!r})")


# --------------------------------------------------------------------------------------------
# command-line dataset spec
# --------------------------------------------------------------------------------------------

DEFAULT_SHAPES_N = 5000
_ACCEPTED_SPECS = ("PATH.npz or npz:PATH (packed arrays), an existing directory or folder:PATH "
                   "(class sub-folders, ImageNet layout), shapes, shapes:N or demo "
                   "(built-in offline demo, N train images and N//4 test images)")


def build_dataset(spec: str, split: str = "train", transform: Transform = None, **kw: Any) -> Dataset:
    """Build a dataset from a command-line spec such as ``x.npz``, ``folder:DIR`` or ``shapes:2000``."""
    text = str(spec).strip()
    low = text.lower()
    if low in ("shapes", "demo") or low.startswith("shapes:"):
        total = DEFAULT_SHAPES_N
        if ":" in text:
            value = text.split(":", 1)[1].strip()
            if not value.isdigit() or int(value) < 1:
                raise ValueError(f"bad dataset spec {spec!r}: shapes:N needs a positive integer N; "
                                 f"accepted forms: {_ACCEPTED_SPECS}")
            total = int(value)
        is_train = _normalise_split(split, "build_dataset") == "train"
        n = total if is_train else max(1, total // 4)
        return ShapesDataset(n, split=split, transform=transform, **kw)
    if low.startswith("npz:"):
        return NpzImageDataset(text[4:], split=split, transform=transform, **kw)
    if low.startswith("folder:"):
        return ImageFolderDataset(text[7:], split=split, transform=transform, **kw)
    if low.endswith(".npz"):
        return NpzImageDataset(text, split=split, transform=transform, **kw)
    if text and Path(text).expanduser().is_dir():
        return ImageFolderDataset(text, split=split, transform=transform, **kw)
    raise ValueError(f"bad dataset spec {spec!r} (not a .npz path, an existing directory or a demo "
                     f"name); accepted forms: {_ACCEPTED_SPECS}")
