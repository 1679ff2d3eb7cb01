"""Datasets from specs: `build_dataset(spec, split)` for evaluation, `build_train_dataset(cfg)` for pretraining."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ..config import Config
from .datasets import ImageFolderDataset, NpzImageDataset, Transform
from .named import imagenet_split_folder, named_dataset, prepare
from .objects import ObjectsDataset
from .seeded import SeededTransformDataset
from .shapes import ShapesDataset
from .shard_samples import ShardSamples
from .shards import ShardDataset, expand_urls
from .spec import DataSpec, as_data_spec, parse_data_spec
from .splits import normalise_split
from .transforms import make_pretrain_transforms

__all__ = ["build_dataset", "build_train_dataset", "fetch_data", "local_npz", "shard_urls", "train_data_spec"]


@dataclass(frozen=True)
class _Options:
    img_size: int | None
    label_key: str | None
    subset_file: str | os.PathLike | None
    unlabeled: bool = False


def shard_urls(spec: DataSpec, split: str = "train") -> list[str]:
    """The shard files of a shards spec: its pattern expanded, or the .tar files of a folder (of its
    `<split>` sub-folder when it has split folders, as for image folders), in sorted order."""
    path = spec.path or ""
    root = Path(path).expanduser()
    if not path or not root.is_dir():
        return expand_urls(path)
    folder = ImageFolderDataset._resolve_split_folder(root, split)
    urls = sorted(str(p) for p in folder.glob("*.tar") if p.is_file())
    if not urls:
        raise FileNotFoundError(f"no .tar shards in {folder} (from {spec.text!r})")
    return urls


def _one_label(spec: DataSpec, o: _Options) -> None:
    if o.label_key is not None:
        raise ValueError(
            f"label key {o.label_key!r} does not apply to {spec.text!r}: a {spec.kind} dataset has "
            f"one label per image; other label arrays are a .npz feature ('quadrant' for shapes)"
        )


def _generated(spec: DataSpec, split: str, transform: Transform, o: _Options) -> Dataset:
    total = int(spec.count or 0)
    n = total if normalise_split(split, "build_dataset") == "train" else max(1, total // 4)
    kw: dict[str, Any] = {"img_size": o.img_size} if o.img_size else {}
    cls = ObjectsDataset if spec.kind == "objects" else ShapesDataset
    return cls(n, split=split, transform=transform, label_key=o.label_key, **kw)


def _npz(spec: DataSpec, split: str, transform: Transform, o: _Options) -> Dataset:
    return NpzImageDataset(spec.path or "", split=split, transform=transform, label_key=o.label_key)


def _folder(spec: DataSpec, split: str, transform: Transform, o: _Options) -> Dataset:
    _one_label(spec, o)
    return ImageFolderDataset(spec.path or "", split=split, transform=transform, subset_file=o.subset_file)


def _imagenet(spec: DataSpec, split: str, transform: Transform, o: _Options) -> Dataset:
    _one_label(spec, o)
    folder = imagenet_split_folder(spec.path or "", split)
    return ImageFolderDataset(folder, split=None, transform=transform, subset_file=o.subset_file)


def _named(spec: DataSpec, split: str, transform: Transform, o: _Options) -> Dataset:
    return named_dataset(spec.name or "", split, transform, label_key=o.label_key, unlabeled=o.unlabeled)


def _shards(spec: DataSpec, split: str, transform: Transform, o: _Options) -> Dataset:
    _one_label(spec, o)
    return ShardSamples(shard_urls(spec, split), transform)


# kind -> builder; a new kind of spec.py needs one entry here
_BUILDERS: dict[str, Callable[[DataSpec, str, Transform, _Options], Dataset]] = {
    "shapes": _generated,
    "objects": _generated,
    "npz": _npz,
    "folder": _folder,
    "imagenet": _imagenet,
    "named": _named,
    "shards": _shards,
}


def build_dataset(
    spec: DataSpec | str | os.PathLike,
    split: str = "train",
    transform: Transform = None,
    *,
    img_size: int | None = None,
    label_key: str | None = None,
    subset_file: str | os.PathLike | None = None,
    unlabeled: bool = False,
) -> Dataset:
    """One split of a dataset spec (a `DataSpec`, or text parsed by `parse_data_spec`), map-style.

    img_size: the size of generated images (shapes; default 32); stored images keep theirs (the
    transform sizes them). label_key: another label array of a .npz, or 'quadrant' for shapes.
    subset_file: keep only the files it lists (image folders only). unlabeled: a named dataset's
    train split also has its unlabelled images (STL-10's 100,000, labelled -1), as pretraining reads.
    A named dataset is downloaded and converted into the cache on first use.
    """
    spec = as_data_spec(spec)
    if subset_file is not None and spec.image_root is None:
        raise ValueError(f"a subset file lists files of an image folder; {spec.text!r} is a {spec.kind} dataset")
    builder = _BUILDERS.get(spec.kind)
    if builder is None:
        raise ValueError(f"no dataset builder for kind {spec.kind!r} (spec {spec.text!r})")
    return builder(spec, split, transform, _Options(img_size, label_key, subset_file, unlabeled))


def fetch_data(spec: DataSpec | str | os.PathLike) -> DataSpec:
    """The parsed spec, its data made local now: a named dataset is downloaded and converted (once).

    Commands call it before loading weights, so a bad spec or a missing download fails at once.
    """
    spec = as_data_spec(spec)
    if spec.kind == "named" and spec.name:
        prepare(spec.name)
    return spec


def local_npz(spec: DataSpec | str | os.PathLike) -> Path | None:
    """The .npz file a spec reads (a named dataset's converted file, fetched first), else None."""
    spec = fetch_data(spec)
    if spec.kind == "named" or (spec.kind == "npz" and spec.path):
        return Path(spec.stat_path or "").expanduser()
    return None


def train_data_spec(cfg: Config) -> DataSpec:
    """The spec of the training data: `data.dataset`, else the reference's root_path/image_folder."""
    d = cfg.data
    return parse_data_spec(d.dataset or f"folder:{os.path.join(d.root_path, d.image_folder)}")


def build_train_dataset(cfg: Config) -> SeededTransformDataset | ShardDataset:
    """The training images with the reference's augmentations, seeded per sample.

    `data.dataset: "shards:/data/shard-{000000..000099}.tar"` streams WebDataset-style tar shards.
    """
    d = cfg.data
    spec = train_data_spec(cfg)
    transform = make_pretrain_transforms(
        d.crop_size,
        tuple(d.crop_scale),
        d.use_horizontal_flip,
        d.use_color_distortion,
        d.use_gaussian_blur,
        d.color_jitter_strength,
    )
    if spec.streamed:
        shards = ShardDataset(shard_urls(spec, "train"), transform, seed=cfg.meta.seed, shuffle_buffer=d.shuffle_buffer)
        if len(shards) == 0:
            raise ValueError(f"the shards of {spec.text!r} hold no samples")
        return shards
    subset = (d.subset_file or None) if spec.image_root is not None else None  # other kinds have no files
    base = build_dataset(spec, split="train", img_size=d.crop_size, subset_file=subset, unlabeled=True)
    if len(base) == 0:  # type: ignore[arg-type]  # torch's Dataset declares no __len__
        raise ValueError(f"dataset {spec.text!r} is empty; point data.dataset or data.root_path at images")
    return SeededTransformDataset(base, transform, seed=cfg.meta.seed, fast_decode=d.fast_decode)
