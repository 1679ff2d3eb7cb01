"""The named datasets: their official files, URLs and md5 checksums, and where their cache lives.

This module is the one source of truth for what `--data cifar10` (and the other names) downloads and
checks. The md5s are the ones the datasets' authors publish (and torchvision checks). The cache is
`$OPENJEPA_DATA` (default `~/.cache/openjepa`): verified downloads in `downloads/<name>/` (MNIST and
Fashion-MNIST have the same file names), the converted `.npz` files beside `downloads/`.
`$OPENJEPA_DATA_MIRROR` (a folder, or a file://, http:// or https:// URL) replaces every file's
official URL base with `<mirror>/<name>/`: the layout of `downloads/`, so another machine's
downloads folder is a mirror.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DATASETS",
    "HOME_ENV",
    "MIRROR_ENV",
    "NamedDataset",
    "RemoteFile",
    "data_home",
    "downloads_dir",
    "lookup",
    "output_path",
    "unlabeled_path",
]

HOME_ENV = "OPENJEPA_DATA"
MIRROR_ENV = "OPENJEPA_DATA_MIRROR"
DEFAULT_HOME = "~/.cache/openjepa"


@dataclass(frozen=True)
class RemoteFile:
    """One official file: its name (on the server, in a mirror and in `downloads/`), md5 and URL bases."""

    name: str
    md5: str
    bases: tuple[str, ...]  # folders tried in order; the file is at base + name

    @property
    def urls(self) -> tuple[str, ...]:
        """The official URLs of the file, in the order they are tried."""
        return tuple(base + self.name for base in self.bases)


@dataclass(frozen=True)
class NamedDataset:
    """A dataset known by name: what to fetch, which reader converts it, and what the cache holds."""

    name: str
    title: str
    files: tuple[RemoteFile, ...]
    layout: str  # the reader in data/archives.py
    output: str  # the converted .npz in the cache: x_train/y_train/x_test/y_test, class_names
    summary: str  # the images it holds, for `openjepa data list`
    download_size: str
    home: str
    classes: tuple[str, ...] = ()  # class names the archive does not carry itself
    unlabeled: str | None = None  # a second .npz of unlabelled images (x_train, labels -1) for pretraining


_CIFAR = ("https://www.cs.toronto.edu/~kriz/",)
_MNIST = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FASHION = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
_IDX = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
_MNIST_MD5 = (
    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "d53e105ee54ea40749a09fcbcd1e9432",
    "9fb629c4189551a2d022fa330f9573f3",
    "ec29112dd5afa0611ce80d1b7f02629c",
)
_FASHION_MD5 = (
    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "25c81989df183df01b3e8a0aad5dffbe",
    "bef4ecab320f06d8554ea6380940ec79",
    "bb300cfdad3c16e7a12a480ee83cd310",
)

_ENTRIES = (
    NamedDataset(
        "cifar10",
        "CIFAR-10",
        (RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", _CIFAR),),
        "cifar10",
        "cifar10.npz",
        "50,000 / 10,000 images, 32x32 RGB, 10 classes",
        "163 MB",
        "https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
    NamedDataset(
        "cifar100",
        "CIFAR-100",
        (RemoteFile("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", _CIFAR),),
        "cifar100",
        "cifar100.npz",
        "50,000 / 10,000 images, 32x32 RGB, 100 classes (--label-key coarse: the 20 superclasses)",
        "161 MB",
        "https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
    NamedDataset(
        "stl10",
        "STL-10",
        (
            RemoteFile(
                "stl10_binary.tar.gz", "91f7769df0f17e558f3565bffb0c7dfb", ("http://ai.stanford.edu/~acoates/stl10/",)
            ),
        ),
        "stl10",
        "stl10.npz",
        "5,000 / 8,000 labelled images, 96x96 RGB, 10 classes; pretraining adds the 100,000 unlabelled ones",
        "2.5 GB",
        "https://cs.stanford.edu/~acoates/stl10/",
        unlabeled="stl10_unlabeled.npz",
    ),
    NamedDataset(
        "imagenette",
        "Imagenette (imagenette2-160)",
        (
            RemoteFile(
                "imagenette2-160.tgz",
                "e793b78cc4c9e9a4ccc0c1155377a412",
                ("https://s3.amazonaws.com/fast-ai-imageclas/",),
            ),
        ),
        "imagenette",
        "imagenette_64px.npz",
        "9,469 / 3,925 images (train / val), centre-cropped and resized to 64x64 RGB, 10 classes",
        "94 MB",
        "https://github.com/fastai/imagenette",
        classes=(
            "tench",
            "English springer",
            "cassette player",
            "chain saw",
            "church",
            "French horn",
            "garbage truck",
            "gas pump",
            "golf ball",
            "parachute",
        ),
    ),
    NamedDataset(
        "mnist",
        "MNIST",
        tuple(RemoteFile(n, m, _MNIST) for n, m in zip(_IDX, _MNIST_MD5)),
        "idx",
        "mnist.npz",
        "60,000 / 10,000 images, 28x28 greyscale, 10 digits",
        "11 MB",
        "http://yann.lecun.com/exdb/mnist/",
        classes=tuple(str(d) for d in range(10)),
    ),
    NamedDataset(
        "fashion-mnist",
        "Fashion-MNIST",
        tuple(RemoteFile(n, m, _FASHION) for n, m in zip(_IDX, _FASHION_MD5)),
        "idx",
        "fashion-mnist.npz",
        "60,000 / 10,000 images, 28x28 greyscale, 10 clothing classes",
        "30 MB",
        "https://github.com/zalandoresearch/fashion-mnist",
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    ),
)
DATASETS: dict[str, NamedDataset] = {entry.name: entry for entry in _ENTRIES}


def lookup(name: str) -> NamedDataset:
    """The catalog entry of a dataset name (any case); a KeyError lists the known names."""
    entry = DATASETS.get(name.strip().lower())
    if entry is None:
        raise KeyError(
            f"unknown dataset {name!r}; known: {', '.join(DATASETS)} (ImageNet, which needs a login to "
            f"download: --data imagenet:FOLDER)"
        )
    return entry


def data_home() -> Path:
    """The cache folder: `$OPENJEPA_DATA`, else ~/.cache/openjepa (read at each call, so tests can move it)."""
    return Path(os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser()


def downloads_dir(entry: NamedDataset) -> Path:
    """Where a dataset's verified official files are kept (and where a file fetched by hand goes)."""
    return data_home() / "downloads" / entry.name


def output_path(entry: NamedDataset) -> Path:
    """The converted .npz of a dataset in the cache (present once it is complete, never half-written)."""
    return data_home() / entry.output


def unlabeled_path(entry: NamedDataset) -> Path | None:
    """The .npz of a dataset's unlabelled images in the cache, for datasets that have them."""
    return data_home() / entry.unlabeled if entry.unlabeled else None
