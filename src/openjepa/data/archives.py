"""Readers of the official archive layouts, to uint8 arrays: CIFAR pickles, MNIST idx files, STL-10
binaries and the Imagenette folder tree.

Parsed here rather than through torchvision's dataset classes: those check every extracted file
against hard-coded md5s, and each layout is a few lines. Archives are read member by member, never
extracted to disk. Every reader returns the arrays of the cached .npz: x_train (N, H, W, C) uint8,
y_train, x_test, y_test, class_names (and extra keys where a dataset has them).
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

__all__ = ["READERS", "read_cifar10", "read_cifar100", "read_idx", "read_imagenette", "read_stl10"]

Arrays = dict[str, np.ndarray]
IMAGENETTE_SIZE = 64  # the side of the cached Imagenette images (the recipes' 64 px)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batches (dicts of lists and numpy arrays) and refuses any other global."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes pickled by Python 3 at protocol 2
    }

    def find_class(self, module: str, name: str) -> Any:
        """Only the numpy array constructors a CIFAR batch uses."""
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR batch")
        return super().find_class(module, name)


def _read_all(path: Path, wanted: Sequence[str]) -> dict[str, bytes]:
    """The bytes of the named files of a .tar.gz (by base name: the official archives hold one folder)."""
    got: dict[str, bytes] = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            name = Path(member.name).name
            if member.isfile() and name in wanted:
                got[name] = _read_member(tar, member)
    missing = [name for name in wanted if name not in got]
    if missing:
        raise ValueError(f"{', '.join(missing)} missing from the archive")
    return got


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    if handle is None:
        raise ValueError(f"{member.name} in the archive is not a file")
    return handle.read()


def _cifar(path: Path, train: Sequence[str], test: str, meta: str, keys: dict[str, str]) -> Arrays:
    """CIFAR pickles: each batch has b'data' (N, 3072) uint8, row-major (C, H, W), and label lists."""
    files = _read_all(path, [*train, test, meta])

    def load(name: str) -> dict[bytes, Any]:
        return _ArrayUnpickler(io.BytesIO(files[name]), encoding="bytes").load()

    out: Arrays = {}
    for split, names in (("train", train), ("test", (test,))):
        batches = [load(n) for n in names]
        x = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8) for b in batches])
        out[f"x_{split}"] = x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()  # (N, 32, 32, 3)
        for suffix, key in keys.items():
            y = np.concatenate([np.asarray(b[key.encode()], dtype=np.int64) for b in batches])
            if y.shape[0] != x.shape[0]:
                raise ValueError(f"the {split} batches hold {x.shape[0]} images but {y.shape[0]} {key}")
            out[f"y_{split}{suffix}"] = y.astype(np.uint8)
    label_names = load(meta)
    for suffix, key in keys.items():
        names = [n.decode() for n in label_names[key.replace("labels", "label_names").encode()]]
        out[f"{suffix[1:]}_class_names" if suffix else "class_names"] = np.array(names)
    return out


def read_cifar10(paths: Sequence[Path], classes: Sequence[str] = ()) -> Arrays:
    """cifar-10-python.tar.gz: data_batch_1..5, test_batch, batches.meta."""
    batches = [f"data_batch_{i}" for i in range(1, 6)]
    return _cifar(paths[0], batches, "test_batch", "batches.meta", {"": "labels"})


def read_cifar100(paths: Sequence[Path], classes: Sequence[str] = ()) -> Arrays:
    """cifar-100-python.tar.gz: train, test, meta; fine labels (y_*) and coarse ones (y_*_coarse)."""
    return _cifar(paths[0], ["train"], "test", "meta", {"": "fine_labels", "_coarse": "coarse_labels"})


def _idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """One gzipped idx file: a big-endian magic number, the dimensions, then uint8 values."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    head = np.frombuffer(raw[: 4 * (1 + ndim)], dtype=">i4")
    if head.size != 1 + ndim or int(head[0]) != magic:
        raise ValueError(f"{path.name} is not an idx file with magic number {magic}")
    shape = tuple(int(d) for d in head[1:])
    values = np.frombuffer(raw, dtype=np.uint8, offset=4 * (1 + ndim))
    if values.size != int(np.prod(shape)):
        raise ValueError(f"{path.name} holds {values.size} values, its header says {shape}")
    return values.reshape(shape)


def read_idx(paths: Sequence[Path], classes: Sequence[str] = ()) -> Arrays:
    """MNIST / Fashion-MNIST: train images, train labels, test images, test labels (idx .gz files)."""
    out: Arrays = {"class_names": np.array(list(classes))}
    for split, (images, labels) in (("train", paths[0:2]), ("test", paths[2:4])):
        x, y = _idx(images, 2051, 3), _idx(labels, 2049, 1)
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{images.name} has {x.shape[0]} images, {labels.name} {y.shape[0]} labels")
        out[f"x_{split}"], out[f"y_{split}"] = x[..., None].copy(), y.copy()  # (N, 28, 28, 1)
    return out


def _stl_images(tar: tarfile.TarFile, member: tarfile.TarInfo, chunk: int = 4096) -> np.ndarray:
    """(N, 96, 96, 3) from an STL-10 .bin (each image column-major per channel), read in chunks."""
    size = 3 * 96 * 96
    if member.size % size:
        raise ValueError(f"{member.name} is not a whole number of 96x96x3 images")
    out = np.empty((member.size // size, 96, 96, 3), dtype=np.uint8)
    handle = tar.extractfile(member)
    if handle is None:
        raise ValueError(f"{member.name} in the archive is not a file")
    for start in range(0, out.shape[0], chunk):
        n = min(chunk, out.shape[0] - start)
        raw = handle.read(n * size)
        if len(raw) != n * size:
            raise ValueError(f"{member.name} ends early")
        # stored (n, c, w, h): to (n, h, w, c)
        out[start : start + n] = np.frombuffer(raw, dtype=np.uint8).reshape(n, 3, 96, 96).transpose(0, 3, 2, 1)
    return out


def read_stl10(paths: Sequence[Path], classes: Sequence[str] = ()) -> Arrays:
    """stl10_binary.tar.gz: train/test X and y (labels 1-10), unlabeled_X, class_names.txt, in one pass."""
    wanted = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "unlabeled_X.bin", "class_names.txt")
    got: dict[str, Any] = {}
    with tarfile.open(paths[0], "r:gz") as tar:
        for member in tar:  # in stream order: seeking back in a 2.5 GB .gz would decompress it again
            name = Path(member.name).name
            if member.isfile() and name in wanted:
                got[name] = _stl_images(tar, member) if name.endswith("_X.bin") else _read_member(tar, member)
    missing = [name for name in wanted if name not in got]
    if missing:
        raise ValueError(f"{', '.join(missing)} missing from the archive")
    out: Arrays = {"class_names": np.array(got["class_names.txt"].decode().split())}
    for split in ("train", "test"):
        x, y = got[f"{split}_X.bin"], np.frombuffer(got[f"{split}_y.bin"], dtype=np.uint8).astype(np.int64) - 1
        if y.shape[0] != x.shape[0] or (y.size and not 0 <= y.min() <= y.max() < 10):
            raise ValueError(f"{split}_y.bin does not hold one label 1-10 per image")
        out[f"x_{split}"], out[f"y_{split}"] = x, y.astype(np.uint8)
    out["x_unlabeled"] = got["unlabeled_X.bin"]
    return out


def read_imagenette(paths: Sequence[Path], classes: Sequence[str] = ()) -> Arrays:
    """imagenette2-160.tgz: <root>/{train,val}/<wnid>/*.JPEG, centre-cropped and resized to 64 px, shuffled."""
    found: dict[str, list[tuple[str, bytes]]] = {"train": [], "val": []}
    with tarfile.open(paths[0], "r:gz") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if member.isfile() and len(parts) >= 4 and parts[-3] in found and parts[-1].lower().endswith(".jpeg"):
                handle = tar.extractfile(member)
                if handle is not None:
                    found[parts[-3]].append((parts[-2], handle.read()))
    wnids = sorted({wnid for items in found.values() for wnid, _ in items})
    if not found["train"] or not found["val"] or len(wnids) != len(classes):
        raise ValueError(f"expected train/ and val/ folders of {len(classes)} class folders, found {len(wnids)}")
    out: Arrays = {"class_names": np.array(list(classes)), "class_wnids": np.array(wnids)}
    for seed, (split, key) in enumerate((("train", "train"), ("val", "test"))):
        items = found[split]
        order = np.random.default_rng(seed).permutation(len(items))  # prefixes are class-balanced
        side = (IMAGENETTE_SIZE, IMAGENETTE_SIZE)
        x = np.empty((len(items), *side, 3), dtype=np.uint8)
        y = np.empty(len(items), dtype=np.uint8)
        for row, i in enumerate(order):
            wnid, data = items[i]
            with Image.open(io.BytesIO(data)) as img:
                x[row] = np.asarray(ImageOps.fit(img.convert("RGB"), side, Image.Resampling.BICUBIC))
            y[row] = wnids.index(wnid)
        out[f"x_{key}"], out[f"y_{key}"] = x, y
    return out


READERS: dict[str, Callable[[Sequence[Path], Sequence[str]], Arrays]] = {
    "cifar10": read_cifar10,
    "cifar100": read_cifar100,
    "idx": read_idx,
    "stl10": read_stl10,
    "imagenette": read_imagenette,
}
