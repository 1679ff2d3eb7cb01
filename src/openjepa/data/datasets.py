"""Datasets: packed ``.npz`` arrays, image folders (ImageNet layout); the shapes demo is in shapes.py.

Every dataset returns ``(transform(img) if transform else img, int(label))`` where ``img`` is a
PIL RGB image, and exposes ``classes``, ``targets`` (np.ndarray) and ``num_classes``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder

from .images import image_extensions, read_rgb, scan_images
from .splits import normalise_split

__all__ = [
    "NpzImageDataset",
    "ImageFolderDataset",
    "IMG_EXTENSIONS",
]

logger = logging.getLogger("openjepa.data")

PathLike = str | os.PathLike
Transform = Callable[[Image.Image], Any] | None
# The suffixes an image folder is scanned for: data/images.py's one set (what this Pillow can open).
IMG_EXTENSIONS: tuple[str, ...] = tuple(sorted(image_extensions()))


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


def _read_npz(path: Path, split: str, label_key: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(uint8 images (N, H, W, C), integer labels (N,), class names or None) of one split of a .npz file."""
    if not path.is_file():
        raise FileNotFoundError(f"npz dataset not found: {path}")
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as exc:  # zipfile/pickle errors say little about which file was bad
        raise ValueError(f"could not read {path} as a .npz archive: {exc}") from exc
    with npz:
        keys = list(npz.files)
        x_key = f"x_{split}"
        if label_key is None:
            y_candidates = [f"y_{split}"]
            names_key = "class_names"
        else:
            # the README's extra labels are named y_<split>_<key>; raw arrays like
            # n_objects_<split> or a full key name are accepted too
            y_candidates = [f"y_{split}_{label_key}", f"{label_key}_{split}", label_key]
            names_key = f"{label_key}_class_names"
        y_key = next((k for k in y_candidates if k in keys), None)
        missing = [] if x_key in keys else [x_key]
        if y_key is None:
            missing.append(" or ".join(y_candidates))
        if missing:
            expected = [x_key, y_candidates[0], names_key]
            raise ValueError(
                f"{path}: missing key(s) {missing}; expected keys {expected}; keys present: {sorted(keys)}"
            )
        images = npz[x_key]
        labels = npz[y_key]
        names = npz[names_key] if names_key in keys else None

    if images.ndim == 3:  # (N, H, W) greyscale without a channel axis
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{path}: {x_key} must have shape (N, H, W, C) with C in 1/3/4, got {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"{path}: {x_key} must be uint8 (0-255), got {images.dtype}")
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"{path}: {y_key} has {labels.shape[0]} labels but {x_key} has {images.shape[0]} images")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: {y_key} must hold integer labels, got {labels.dtype}")

    return images, labels, names


class NpzImageDataset(Dataset):
    """Images and labels from a ``.npz`` file (keys ``x_train``/``y_train``/``x_test``/``y_test``)."""

    def __init__(
        self,
        path: PathLike,
        split: str = "train",
        transform: Transform = None,
        label_key: str | None = None,
        indices: Sequence[int] | None = None,
    ) -> None:
        """Load one split's uint8 images and the chosen label array; see the module docstring."""
        self.path = Path(path).expanduser()
        self.split = normalise_split(split, f"NpzImageDataset({self.path})")
        self.transform = transform
        self.label_key = label_key
        images, labels, names = _read_npz(self.path, self.split, label_key)

        # the uint8 array is kept as is (a few hundred MB at most); PIL conversion is per item
        self.images = images
        self._index: np.ndarray | None = None
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
        img, label = self.load(index, _array_to_rgb)
        return (self.transform(img) if self.transform is not None else img), label

    def load(self, index: int, read: Callable[[np.ndarray], Any]) -> tuple[Any, int]:
        """``(read(pixels), label)`` of one position, `pixels` its (H, W, C) uint8 array (not a copy)."""
        i = int(self._index[index]) if self._index is not None else int(index)
        return read(self.images[i]), int(self.targets[index])

    def __repr__(self) -> str:
        """Short description with the file, split and size."""
        return (
            f"{type(self).__name__}({str(self.path)!r}, split={self.split!r}, n={len(self)}, "
            f"classes={self.num_classes}, label_key={self.label_key!r})"
        )


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


def _is_listed(path: str, subset: tuple[frozenset, frozenset]) -> bool:
    """True when a subset file names `path` (by file name, or as 'class/file')."""
    names, rel = subset
    p = Path(path)
    return p.name in names or f"{p.parent.name}/{p.name}" in rel


class ImageFolderDataset(ImageFolder):
    """torchvision ``ImageFolder`` (``root[/split]/<class>/<image>``) that skips unreadable files."""

    def __init__(
        self,
        root: PathLike,
        split: str | None = "train",
        transform: Transform = None,
        subset_file: PathLike | None = None,
    ) -> None:
        """Index ``root/split`` (or ``root``), optionally keeping only files named in ``subset_file``."""
        root_path = Path(root).expanduser()
        if not root_path.is_dir():
            raise FileNotFoundError(
                f"data folder not found: {root_path}; set data.root_path/data.image_folder or pass --data PATH"
            )
        folder = self._resolve_split_folder(root_path, split)
        self.split = split
        self.subset_file = str(subset_file) if subset_file is not None else None
        subset = _read_subset_file(subset_file) if subset_file is not None else None
        accepted = ", ".join(IMG_EXTENSIONS)
        what = f" listed in subset file {subset_file}" if subset is not None else ""
        self._subset = subset
        try:
            super().__init__(str(folder), transform=transform, loader=read_rgb)
        except FileNotFoundError as exc:  # "Couldn't find any class folder"
            raise ValueError(
                f"no images found in {folder}: expected class sub-folders ({folder}/<class>/<image>) "
                f"holding files with extensions {accepted}{what} ({exc})"
            ) from exc
        if not self.samples:
            raise ValueError(
                f"no images found in {folder}: expected class sub-folders ({folder}/<class>/<image>) "
                f"holding files with extensions {accepted}{what}"
            )
        self.folder = folder
        self.targets: np.ndarray = np.asarray(self.targets, dtype=np.int64)
        self.num_classes = len(self.classes)
        self.num_skipped = 0
        self._bad_files: set[str] = set()

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        """Class folder names, sorted and numbered as torchvision does, less hidden (dot) folders."""
        classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
        if not classes:
            raise FileNotFoundError(f"Couldn't find any class folder in {directory}.")
        return classes, {name: i for i, name in enumerate(classes)}

    def make_dataset(
        self,
        directory: str,
        class_to_idx: dict[str, int],
        extensions: Any = None,
        is_valid_file: Any = None,
        allow_empty: bool = False,
    ) -> list[tuple[str, int]]:
        """(path, class index) of every image, listed by data/images.py `scan_images` per class folder
        (so the same files as `Encoder.embed` and `openjepa index`); a class may be left empty."""
        exts = image_extensions()
        samples: list[tuple[str, int]] = []
        for name in sorted(class_to_idx):
            files, _ = scan_images(os.path.join(directory, name), exts)
            samples += [(f, class_to_idx[name]) for f in files if self._subset is None or _is_listed(f, self._subset)]
        return samples

    @staticmethod
    def _resolve_split_folder(root: Path, split: str | None) -> Path:
        """Pick ``root/split`` (test and val stand in for each other) or fall back to ``root``."""
        if not split:
            return root
        for name in _SPLIT_ALIASES.get(split, (split,)):
            if (root / name).is_dir():
                return root / name
        present = [n for n in _SPLIT_NAMES if (root / n).is_dir()]
        if present:
            # falling back to root here would treat the split folders themselves as classes
            raise ValueError(
                f"split folder {root / split} not found; {root} has split folders {present}; pick one of those splits"
            )
        return root

    def __getitem__(self, index: int) -> tuple[Any, int]:
        """Return ``(image, label)``; an unreadable file is logged once and the next one is used."""
        img, target = self.load(index, self.loader)
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, int(target)

    def load(self, index: int, read: Callable[[str], Any]) -> tuple[Any, int]:
        """``(read(path), label)`` of one position; a file `read` fails on is logged once and the next one used."""
        n = len(self.samples)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        index %= n
        for step in range(n):
            path, target = self.samples[(index + step) % n]
            if path in self._bad_files:
                continue
            try:
                return read(path), target
            except Exception as exc:  # any decode failure: a bad file must not stop a long run
                self._bad_files.add(path)
                self.num_skipped = len(self._bad_files)
                logger.warning("skipping unreadable image %s (%s: %s)", path, type(exc).__name__, exc)
        raise RuntimeError(
            f"every image file under {self.folder} is unreadable "
            f"({len(self._bad_files)} files failed to load); check the data folder"
        )
