"""Tiny archives in each named dataset's official layout, a local mirror serving them, and a guard that
fails any URL that is not a local file: no test touches the network.

The images are written the way each format's documentation describes it (CIFAR: one row of R, then
G, then B planes, each row-major; STL-10: each channel column-major; idx: big-endian header then
bytes), independently of the readers in openjepa/data/archives.py.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import pickle
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from openjepa.data import catalog

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _images(rng: np.random.Generator, n: int, h: int, w: int, c: int = 3) -> np.ndarray:
    return rng.integers(0, 256, size=(n, h, w, c), dtype=np.uint8)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _tar_gz(path: Path, files: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            _add(tar, name, data)
    return path


def _cifar_rows(x: np.ndarray) -> np.ndarray:
    # each row: the 1024 red values (row-major), then the green ones, then the blue ones
    return np.stack([np.concatenate([img[:, :, ch].reshape(-1) for ch in range(3)]) for img in x])


def make_cifar10(folder: Path, per_batch: int = 4, n_test: int = 6, seed: int = 0) -> tuple[Path, dict]:
    """cifar-10-python.tar.gz: cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta."""
    rng = np.random.default_rng(seed)
    files, xs, ys = {}, [], []
    for i in range(1, 6):
        x, y = _images(rng, per_batch, 32, 32), rng.integers(0, 10, per_batch).tolist()
        batch = {b"batch_label": f"training batch {i} of 5".encode(), b"data": _cifar_rows(x), b"labels": y}
        files[f"cifar-10-batches-py/data_batch_{i}"] = pickle.dumps(batch, protocol=2)
        xs.append(x)
        ys += y
    x_test, y_test = _images(rng, n_test, 32, 32), rng.integers(0, 10, n_test).tolist()
    files["cifar-10-batches-py/test_batch"] = pickle.dumps({b"data": _cifar_rows(x_test), b"labels": y_test}, 2)
    meta = {b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_cases_per_batch": per_batch}
    files["cifar-10-batches-py/batches.meta"] = pickle.dumps(meta, protocol=2)
    files["cifar-10-batches-py/readme.html"] = b"<html></html>"
    path = _tar_gz(folder / "cifar-10-python.tar.gz", files)
    want = {"x_train": np.concatenate(xs), "y_train": np.array(ys), "x_test": x_test, "y_test": np.array(y_test)}
    return path, {**want, "class_names": CIFAR10_NAMES}


def make_cifar100(folder: Path, n_train: int = 10, n_test: int = 5, seed: int = 1) -> tuple[Path, dict]:
    """cifar-100-python.tar.gz: cifar-100-python/train, test, meta (fine and coarse labels)."""
    rng = np.random.default_rng(seed)
    fine_names = [f"fine{i}" for i in range(100)]
    coarse_names = [f"coarse{i}" for i in range(20)]
    want: dict = {"class_names": fine_names, "coarse_class_names": coarse_names}
    files = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x, fine, coarse = _images(rng, n, 32, 32), rng.integers(0, 100, n), rng.integers(0, 20, n)
        batch = {b"data": _cifar_rows(x), b"fine_labels": fine.tolist(), b"coarse_labels": coarse.tolist()}
        files[f"cifar-100-python/{split}"] = pickle.dumps(batch, protocol=2)
        want.update({f"x_{split}": x, f"y_{split}": fine, f"y_{split}_coarse": coarse})
    meta = {
        b"fine_label_names": [n.encode() for n in fine_names],
        b"coarse_label_names": [n.encode() for n in coarse_names],
    }
    files["cifar-100-python/meta"] = pickle.dumps(meta, protocol=2)
    return _tar_gz(folder / "cifar-100-python.tar.gz", files), want


def _idx_bytes(values: np.ndarray, magic: int) -> bytes:
    head = np.array([magic, *values.shape], dtype=">i4").tobytes()
    return gzip.compress(head + values.astype(np.uint8).tobytes())


def make_idx(folder: Path, n_train: int = 12, n_test: int = 5, seed: int = 2) -> tuple[list[Path], dict]:
    """MNIST / Fashion-MNIST: {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    want, paths = {}, []
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        x, y = _images(rng, n, 28, 28, 1)[..., 0], rng.integers(0, 10, n)
        for kind, values, magic in (("images-idx3", x, 2051), ("labels-idx1", y, 2049)):
            path = folder / f"{prefix}-{kind}-ubyte.gz"
            path.write_bytes(_idx_bytes(values, magic))
            paths.append(path)
        want.update({f"x_{split}": x[..., None], f"y_{split}": y})
    return paths, want


def _stl_bytes(x: np.ndarray) -> bytes:
    # each image: its red, green and blue 96x96 planes, each column-major (Fortran order)
    return b"".join(img[:, :, ch].tobytes(order="F") for img in x for ch in range(3))


def make_stl10(
    folder: Path, n_train: int = 5, n_test: int = 4, n_unlabeled: int = 7, seed: int = 3
) -> tuple[Path, dict]:
    """stl10_binary.tar.gz: stl10_binary/{train,test}_{X,y}.bin, unlabeled_X.bin, class_names.txt."""
    rng = np.random.default_rng(seed)
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    files = {"stl10_binary/class_names.txt": ("\n".join(names) + "\n").encode()}
    want: dict = {"class_names": names}
    for split, n in (("train", n_train), ("test", n_test)):
        x, y = _images(rng, n, 96, 96), rng.integers(1, 11, n)  # labels 1-10 on disk
        files[f"stl10_binary/{split}_X.bin"] = _stl_bytes(x)
        files[f"stl10_binary/{split}_y.bin"] = y.astype(np.uint8).tobytes()
        want.update({f"x_{split}": x, f"y_{split}": y - 1})
    x_unlabeled = _images(rng, n_unlabeled, 96, 96)
    files["stl10_binary/unlabeled_X.bin"] = _stl_bytes(x_unlabeled)
    files["stl10_binary/fold_indices.txt"] = b"0 1 2\n"
    want["x_unlabeled"] = x_unlabeled
    return _tar_gz(folder / "stl10_binary.tar.gz", files), want


IMAGENETTE_WNIDS = [
    "n01440764",
    "n02102040",
    "n02979186",
    "n03000684",
    "n03028079",
    "n03394916",
    "n03417042",
    "n03425413",
    "n03445777",
    "n03888257",
]


def _jpeg(rgb: tuple[int, int, int], size: tuple[int, int], grey: bool = False) -> bytes:
    img = Image.new("RGB", size, rgb)
    buf = io.BytesIO()
    (img.convert("L") if grey else img).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def make_imagenette(folder: Path, train_per_class: int = 2, val_per_class: int = 1) -> tuple[Path, dict]:
    """imagenette2-160.tgz: imagenette2-160/{train,val}/<wnid>/*.JPEG, one flat colour per class."""
    colours = [(25 * c, 255 - 20 * c, (97 * c) % 256) for c in range(10)]
    files: dict[str, bytes] = {"imagenette2-160/noisy_imagenette.csv": b"path,noisy_labels_0\n"}
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for c, wnid in enumerate(IMAGENETTE_WNIDS):
            for i in range(per_class):
                size = (213, 160) if i % 2 == 0 else (160, 240)  # landscape and portrait, short side 160
                data = _jpeg(colours[c], size, grey=(c == 3 and i == 0))
                files[f"imagenette2-160/{split}/{wnid}/{wnid}_{i}.JPEG"] = data
    path = folder / "imagenette2-160.tgz"
    return _tar_gz(path, files), {"colours": colours, "train": 10 * train_per_class, "test": 10 * val_per_class}


def make_imagenet_tree(root: Path, flat_val: bool = False) -> Path:
    """An ImageNet-layout folder: train/<wnid>/ (3 images per class) and val/<wnid>/ (2), 2 classes;
    with `flat_val`, val/ holds its images directly (as ILSVRC2012's val archive unpacks)."""
    for split, n in (("train", 3), ("val", 2)):
        for c, wnid in enumerate(IMAGENETTE_WNIDS[:2]):
            folder = root / split if split == "val" and flat_val else root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (12, 10), (100 * c, 50, 50)).save(folder / f"{wnid}_{split}_{i}.JPEG")
    return root


MAKERS = {
    "cifar10": make_cifar10,
    "cifar100": make_cifar100,
    "mnist": make_idx,
    "fashion-mnist": make_idx,
    "stl10": make_stl10,
    "imagenette": make_imagenette,
}


def build_mirror(name: str, mirror: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Write the tiny archives of `name` into `mirror/<name>/` (the mirror layout) and put their md5s in
    the catalog; what they hold."""
    folder = mirror / name
    folder.mkdir(parents=True, exist_ok=True)
    _, want = MAKERS[name](folder)
    entry = catalog.DATASETS[name]
    files = tuple(dataclasses.replace(f, md5=md5(folder / f.name)) for f in entry.files)
    monkeypatch.setitem(catalog.DATASETS, name, dataclasses.replace(entry, files=files))
    return want


def set_md5(monkeypatch: pytest.MonkeyPatch, name: str, file_name: str, value: str) -> None:
    """Give one file of a catalog entry another md5 (as a test's tiny archive needs)."""
    entry = catalog.DATASETS[name]
    files = tuple(dataclasses.replace(f, md5=value) if f.name == file_name else f for f in entry.files)
    monkeypatch.setitem(catalog.DATASETS, name, dataclasses.replace(entry, files=files))


class NetworkCalls:
    """What the guard saw: every URL opened, and the non-file ones it refused."""

    def __init__(self) -> None:
        self.opened: list[str] = []
        self.refused: list[str] = []


def offline_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> NetworkCalls:
    """An empty cache in tmp_path/cache, no mirror, and urlopen refusing every URL but file:// ones and
    the loopback address (a test's own HTTP server)."""
    calls = NetworkCalls()
    real = urllib.request.urlopen

    def guarded(url, *args, **kwargs):
        full = url.full_url if isinstance(url, urllib.request.Request) else str(url)
        calls.opened.append(full)
        if not full.startswith(("file:", "http://127.0.0.1:")):
            calls.refused.append(full)
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution (no network in tests)")
        return real(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", guarded)
    monkeypatch.setenv(catalog.HOME_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(catalog.MIRROR_ENV, raising=False)
    return calls


def cache_files(tmp_path: Path) -> list[str]:
    """Every file under the test cache (hidden ones included), relative, less the lock files."""
    root = tmp_path / "cache"
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.parent.name != ".locks")
