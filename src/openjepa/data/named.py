"""Datasets by name (`--data cifar10`, ...) and by layout (`imagenet:<folder>`).

A named dataset is downloaded on first use (data/download.py), converted once to the cached .npz
that `NpzImageDataset` reads (data/archives.py) and reused from then on. Each .npz is written under a
temporary name and renamed when complete, under a per-dataset lock, so the cache never holds a
half-converted file and concurrent processes (e.g. the ranks of a launch) convert it once.
"""

from __future__ import annotations

import logging
import os
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np
from torch.utils.data import ConcatDataset, Dataset

from ..core.atomic import atomic_path
from .archives import READERS, Arrays
from .catalog import NamedDataset, data_home, downloads_dir, lookup, output_path, unlabeled_path
from .datasets import NpzImageDataset, Transform
from .download import DownloadError, dataset_lock, fetch_files
from .images import image_extensions
from .splits import normalise_split

__all__ = ["CorruptArchiveError", "cache_state", "imagenet_split_folder", "named_dataset", "prepare"]

logger = logging.getLogger("openjepa.data")
# what a damaged archive raises while it is read (gzip's BadGzipFile and PIL's decode errors are OSErrors)
_UNREADABLE = (OSError, EOFError, tarfile.TarError, zlib.error, pickle.UnpicklingError, ValueError, KeyError, TypeError)


class CorruptArchiveError(DownloadError):
    """An archive passed its checksum but could not be read in its official layout."""


def _write_npz(path: Path, arrays: Arrays) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to a name
        np.savez(f, **arrays)  # type: ignore[arg-type]  # the stubs read **arrays as allow_pickle


def _convert(entry: NamedDataset, archives: list[Path]) -> None:
    logger.info("converting %s into %s", entry.title, data_home())
    try:
        arrays = READERS[entry.layout](archives, entry.classes)
    except _UNREADABLE as exc:
        for path in archives:
            path.unlink(missing_ok=True)
        names = ", ".join(p.name for p in archives)
        one = len(archives) == 1
        raise CorruptArchiveError(
            f"{names} {'matches its md5' if one else 'match their md5s'} but {'is' if one else 'are'} not a "
            f"readable {entry.title} download ({type(exc).__name__}: {exc}); removed {'it' if one else 'them'} "
            f"from {downloads_dir(entry)}: run the command again to download afresh"
        ) from exc
    unlabeled = arrays.pop("x_unlabeled", None)
    extra = unlabeled_path(entry)
    if unlabeled is not None and extra is not None:
        _write_npz(extra, {"x_train": unlabeled, "y_train": np.full(len(unlabeled), -1, dtype=np.int64)})
    _write_npz(output_path(entry), arrays)  # written last: its presence means the dataset is complete
    logger.info("converted %s to %s", entry.title, output_path(entry))


def prepare(name: str) -> Path:
    """The cached .npz of a named dataset: fetched (md5-checked) and converted on first use, then reused."""
    entry = lookup(name)
    out, extra = output_path(entry), unlabeled_path(entry)

    def complete() -> bool:
        return out.is_file() and (extra is None or extra.is_file())

    if complete():
        return out
    with dataset_lock(data_home(), entry.name):
        if not complete():  # another process may have made it while this one waited
            _convert(entry, fetch_files(entry))
    return out


def named_dataset(
    name: str,
    split: str = "train",
    transform: Transform = None,
    label_key: str | None = None,
    unlabeled: bool = False,
) -> Dataset:
    """One split of a named dataset; with `unlabeled`, its train split also has the dataset's unlabelled
    images (STL-10's 100,000, labelled -1) after the labelled ones: what pretraining reads."""
    entry = lookup(name)
    labelled = NpzImageDataset(prepare(entry.name), split=split, transform=transform, label_key=label_key)
    extra = unlabeled_path(entry)
    if not unlabeled or extra is None or normalise_split(split, entry.name) != "train":
        return labelled
    return ConcatDataset([labelled, NpzImageDataset(extra, split="train", transform=transform)])


def cache_state(entry: NamedDataset) -> tuple[str, int]:
    """(what the cache holds of a dataset, in words; its bytes on disk) for `openjepa data list`."""
    outputs = [p for p in (output_path(entry), unlabeled_path(entry)) if p is not None and p.is_file()]
    files = [downloads_dir(entry) / f.name for f in entry.files if (downloads_dir(entry) / f.name).is_file()]
    size = sum(p.stat().st_size for p in outputs + files)
    if output_path(entry).is_file():
        return "ready", size
    if files:
        return f"downloaded {len(files)}/{len(entry.files)} files, not converted", size
    return "not cached", size


def imagenet_split_folder(root: str | os.PathLike, split: str) -> Path:
    """`root/train` or `root/val` (for test) of an ImageNet-layout tree, train/<wnid>/*.JPEG and
    val/<wnid>/*.JPEG; an error says what is off (a missing split, val images not sorted by class)."""
    base = Path(root).expanduser()
    if not base.is_dir():
        raise FileNotFoundError(f"imagenet folder not found: {base}")
    folder = base / ("train" if normalise_split(split, f"imagenet:{root}") == "train" else "val")
    if not folder.is_dir():
        raise ValueError(
            f"{base} is not in the ImageNet layout: {folder} is missing "
            f"(expected {base}/train/<wnid>/*.JPEG and {base}/val/<wnid>/*.JPEG)"
        )
    exts = image_extensions()
    with os.scandir(folder) as entries:
        loose = any(e.is_file() and Path(e.name).suffix.lower() in exts for e in entries)
    if loose:
        raise ValueError(
            f"{folder} holds images directly: sort them into {folder}/<wnid>/ class folders "
            f"(ILSVRC2012's devkit lists the class of each validation image)"
        )
    return folder
