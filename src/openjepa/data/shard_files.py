"""The files of tar shards: shard lists (brace ranges, globs), the members of each sample, sample counts.

A shard is a plain tar file (`shard-000000.tar`) whose consecutive members sharing a key form one
sample (the WebDataset layout, see shards.py). This module only reads headers and members; the
streaming order lives in shards.py, the writer in shard_writer.py.
"""

from __future__ import annotations

import glob
import json
import os
import re
import tarfile
from pathlib import Path
from typing import Iterator, Sequence

from PIL import Image

from ..core.atomic import atomic_write_text
from .images import decode_rgb, image_extensions

__all__ = ["SHARDS_PREFIX", "INDEX_NAME", "IMAGE_EXTS", "expand_urls", "count_samples", "index_shards"]

SHARDS_PREFIX = "shards:"
INDEX_NAME = "openjepa-shards.json"  # {shard file name: {"samples": n, "bytes": size}} beside the shards
# A member is the sample's image when its type is one of data/images.py's image suffixes.
IMAGE_EXTS = tuple(sorted(e.lstrip(".") for e in image_extensions()))
_BRACE = re.compile(r"\{([^{}]*)\}")


# --------------------------------------------------------------------------- shard lists
def _expand_braces(text: str) -> list[str]:
    """`a-{000..002}.tar` -> a-000.tar a-001.tar a-002.tar; `{x,y}` -> both; nested left to right."""
    m = _BRACE.search(text)
    if m is None:
        return [text]
    body, head, tail = m.group(1), text[: m.start()], text[m.end() :]
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = rng.group(1), rng.group(2)
        width = len(lo) if lo.startswith("0") or len(lo) == len(hi) else 0
        step = 1 if int(hi) >= int(lo) else -1
        items = [str(i).zfill(width) for i in range(int(lo), int(hi) + step, step)]
    else:
        items = body.split(",")
    return [out for item in items for out in _expand_braces(head + item + tail)]


def expand_urls(spec: str) -> list[str]:
    """Shard paths of a spec: brace ranges (`shard-{000000..000099}.tar`), globs, `::` between lists.

    A leading `shards:` is accepted. Every path must exist (local or mounted file systems).
    """
    text = spec[len(SHARDS_PREFIX) :] if spec.startswith(SHARDS_PREFIX) else spec
    urls: list[str] = []
    for part in (p.strip() for p in text.split("::")):
        if not part:
            continue
        for item in _expand_braces(os.path.expanduser(part)):
            if any(c in item for c in "*?["):
                found = sorted(glob.glob(item))
                if not found:
                    raise FileNotFoundError(f"no shard matches {item!r} (from {spec!r})")
                urls.extend(found)
            else:
                urls.append(item)
    if not urls:
        raise ValueError(f"shard spec {spec!r} names no shard; e.g. shards:/data/in22k/shard-{{000000..001023}}.tar")
    missing = [u for u in urls if not os.path.isfile(u)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(urls)} shard(s) of {spec!r} not found, e.g. {missing[0]}")
    return urls


# --------------------------------------------------------------------------- reading tar members
def _split_name(name: str) -> tuple[str, str]:
    """WebDataset key and extension: the key is the path up to the first dot of the base name."""
    name = name[2:] if name.startswith("./") else name
    folder, base = os.path.split(name)
    key, _, ext = base.partition(".")
    return (os.path.join(folder, key) if folder else key), ext.lower()


def _iter_groups(tf: tarfile.TarFile) -> Iterator[tuple[str, dict[str, tarfile.TarInfo]]]:
    """(key, {extension: member}) for each run of consecutive files sharing a key; data is not read."""
    key = ""  # only compared once `group` holds a member, which sets it
    group: dict[str, tarfile.TarInfo] = {}
    while (member := tf.next()) is not None:
        if not member.isfile():
            continue
        k, ext = _split_name(member.name)
        if k != key and group:
            yield key, group
            group = {}
        key = k
        group[ext] = member
    if group:
        yield key, group


def count_samples(path: str | os.PathLike) -> int:
    """Samples in one shard, from its tar headers (the image bytes are skipped, not read)."""
    with tarfile.open(path, "r:") as tf:
        return sum(1 for _ in _iter_groups(tf))


def _read_index(folder: Path) -> dict:
    try:
        return json.loads((folder / INDEX_NAME).read_text())
    except (OSError, ValueError):
        return {}


def index_shards(urls: Sequence[str]) -> list[int]:
    """Sample counts of the shards, from `openjepa-shards.json` beside them when it is current
    (same byte size), else by reading their headers and writing that index for next time."""
    counts: list[int] = []
    by_folder: dict[Path, dict] = {}
    stale: dict[Path, dict] = {}
    for u in urls:
        folder, name, size = Path(u).parent, Path(u).name, os.path.getsize(u)
        idx = by_folder.setdefault(folder, _read_index(folder))
        entry = idx.get(name)
        if not (isinstance(entry, dict) and entry.get("bytes") == size and isinstance(entry.get("samples"), int)):
            entry = {"samples": count_samples(u), "bytes": size}
            idx[name] = entry
            stale[folder] = idx
        counts.append(entry["samples"])
    for folder, idx in stale.items():
        try:
            atomic_write_text(folder / INDEX_NAME, json.dumps(idx, indent=0, sort_keys=True))
        except OSError:  # read-only dataset folder: count again next time
            pass
    return counts


def _decode(shard: str, key: str, group: dict[str, bytes]) -> tuple[Image.Image, int]:
    """PIL RGB image and integer label (-1 when the sample has no `.cls`) of one sample's members.

    As in WebDataset, an extension's last component names its type (`seg.png` is a PNG)."""
    img_ext = next((e for e in group if e.rsplit(".", 1)[-1] in IMAGE_EXTS), None)
    if img_ext is None:
        raise ValueError(
            f"sample {key!r} of shard {shard} has no image (members: {sorted(group)}; "
            f"expected one of {', '.join(IMAGE_EXTS)})"
        )
    try:
        img = decode_rgb(group[img_ext])
    except Exception as e:
        raise ValueError(f"cannot decode image {key}.{img_ext} of shard {shard}: {e}") from e
    cls = next((e for e in group if e.rsplit(".", 1)[-1] == "cls"), None)
    label = int(group[cls].decode().strip()) if cls is not None else -1
    return img, label
