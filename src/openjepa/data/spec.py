"""The dataset-spec grammar: one parser for every `--data`, `--images` and `data.dataset` string.

    PREFIX:REST   a registered prefix (case-insensitive) and the rest, untouched:
                  npz:PATH, folder:PATH, imagenet:FOLDER, shards:PATTERN, shapes:N
    NAME          a registered bare name (case-insensitive): shapes, demo, and the named datasets
                  of data/catalog.py (cifar10, cifar100, stl10, imagenette, mnist, fashion-mnist)
    PATH          a path ending in .npz (any case) or an existing directory (a class-folder tree)

A bare name wins over a folder of that name in the working directory: write `./cifar10` or
`folder:cifar10` for the folder. Paths are never case-folded, stripped inside or expanded here (the
datasets expand `~`). Adding a kind is one entry in `_PREFIXES` or
`_NAMES` below, its name in KINDS (and in the DataSpec properties that apply to it) and one builder
in `openjepa.data.build`: callers only ever see a `DataSpec`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .catalog import DATASETS, lookup, output_path

__all__ = [
    "ACCEPTED_SPECS",
    "DEFAULT_SHAPES_N",
    "KINDS",
    "DataSpec",
    "as_data_spec",
    "image_inputs",
    "parse_data_spec",
]

KINDS = ("folder", "imagenet", "named", "npz", "objects", "shards", "shapes")
DEFAULT_SHAPES_N = 5000
ACCEPTED_SPECS = (
    "PATH.npz or npz:PATH (packed arrays), an existing directory or folder:PATH "
    "(class sub-folders), imagenet:FOLDER (FOLDER/train/<wnid>/*.JPEG and FOLDER/val/<wnid>/*.JPEG), "
    f"{', '.join(DATASETS)} (downloaded on first use: openjepa data list), "
    "shards:PATTERN (WebDataset tar shards: brace ranges, globs, '::' between lists, or a folder of "
    ".tar files), shapes, shapes:N or demo (the offline demo: N train images of 1-4 shapes, labelled "
    "by count, and N//4 test images), objects or objects:N (1-4 objects of one kind, labelled by kind)"
)


@dataclass(frozen=True)
class DataSpec:
    """A parsed dataset spec: what kind of data, where it is, and the text it was written as.

    kind: one of KINDS. path: the file or folder (folder, imagenet, npz) or the shard list (shards),
    as written. count: train images of a generated dataset (shapes; its test split has count // 4).
    name: the catalog name of a named dataset (named: read from its .npz in the cache).
    text: the spec as given, stripped: what messages, result JSONs and cache keys show.
    Splits: a folder (or a shards folder) reads `path/<split>` when it has split sub-folders
    (test and val stand in for each other) and `path` itself otherwise; a .npz reads its
    x_<split>/y_<split> arrays; shapes draws each split from its own seed stream.
    """

    kind: str
    text: str
    path: str | None = None
    count: int | None = None
    name: str | None = None

    def __str__(self) -> str:
        """The spec as it was written."""
        return self.text

    @property
    def image_root(self) -> str | None:
        """The folder of image files this spec reads (for `openjepa index` and subset files), else None."""
        return self.path if self.kind in ("folder", "imagenet") else None

    @property
    def stat_path(self) -> str | None:
        """The file or folder whose size and mtime identify the data (cache keys); None when generated."""
        if self.kind == "named" and self.name:
            return str(output_path(lookup(self.name)))  # the converted file, once it is in the cache
        return self.path if self.kind in ("folder", "imagenet", "npz") else None

    @property
    def streamed(self) -> bool:
        """True for data read front to back from tar shards (pretraining streams them)."""
        return self.kind == "shards"


def _bad(text: str, why: str) -> ValueError:
    return ValueError(f"bad dataset spec {text!r}{why}; accepted forms: {ACCEPTED_SPECS}")


def _with_path(kind: str) -> Callable[[str, str], DataSpec]:
    def parse(rest: str, text: str) -> DataSpec:
        if not rest.strip():
            raise _bad(text, f": {kind}: needs a path after the colon")
        return DataSpec(kind, text, path=rest)

    return parse


def _generated(kind: str) -> Callable[[str, str], DataSpec]:
    def parse(rest: str, text: str) -> DataSpec:
        value = rest.strip()
        if not value.isdigit() or int(value) < 1:
            raise _bad(text, f": {kind}:N needs a positive integer N")
        return DataSpec(kind, text, count=int(value))

    return parse


# prefix (lower case) -> parser of (rest after the colon, whole text)
_PREFIXES: dict[str, Callable[[str, str], DataSpec]] = {
    "npz": _with_path("npz"),
    "folder": _with_path("folder"),
    "imagenet": _with_path("imagenet"),
    "shards": _with_path("shards"),
    "shapes": _generated("shapes"),
    "objects": _generated("objects"),
}


def _named(name: str, text: str) -> DataSpec:
    return DataSpec("named", text, name=name)


# bare name (lower case) -> parser of the whole text
_NAMES: dict[str, Callable[[str], DataSpec]] = {
    "shapes": lambda text: DataSpec("shapes", text, count=DEFAULT_SHAPES_N),
    "objects": lambda text: DataSpec("objects", text, count=DEFAULT_SHAPES_N),
    "demo": lambda text: DataSpec("shapes", text, count=DEFAULT_SHAPES_N),
    **{name: functools.partial(_named, name) for name in DATASETS},
}


def _has_prefix(text: str) -> bool:
    head, sep, _ = text.partition(":")
    return bool(sep) and head.lower() in _PREFIXES


def parse_data_spec(text: str | os.PathLike) -> DataSpec:
    """Parse a dataset spec (see the module docstring); a ValueError names the accepted forms."""
    text = os.fspath(text).strip()
    if _has_prefix(text):
        head, _, rest = text.partition(":")
        return _PREFIXES[head.lower()](rest, text)
    low = text.lower()
    if low in _NAMES:
        return _NAMES[low](text)
    if low.endswith(".npz"):
        return DataSpec("npz", text, path=text)
    if text and Path(text).expanduser().is_dir():
        return DataSpec("folder", text, path=text)
    raise _bad(text, " (not a .npz path, an existing directory, a prefixed spec or a demo name)")


def as_data_spec(spec: DataSpec | str | os.PathLike) -> DataSpec:
    """`spec` itself when already parsed, else `parse_data_spec(spec)`."""
    return spec if isinstance(spec, DataSpec) else parse_data_spec(spec)


def image_inputs(items: Sequence[str | os.PathLike]) -> list[str]:
    """What `openjepa index --images` embeds: image files, and the folders of the specs that have them.

    A path without a spec prefix that is not a .npz (an image file or a folder, even one named like
    a demo dataset) is kept as given, so that a missing one is reported by the file scan; any other
    spec must read a folder of image files.
    """
    out: list[str] = []
    for item in items:
        text = os.fspath(item)
        plain, low = text.strip(), text.strip().lower()
        named = low in _NAMES and not os.path.exists(text)
        if not (_has_prefix(plain) or low.endswith(".npz") or named):
            out.append(text)
            continue
        spec = parse_data_spec(plain)
        if spec.image_root is None:
            raise ValueError(
                f"cannot index {spec.text!r}: a {spec.kind} dataset holds no image files to "
                f"index; give image folders (DIR or folder:DIR) or image files"
            )
        out.append(spec.image_root)
    return out
