"""Streaming WebDataset-style tar shards: shuffled, split across ranks and workers, resumable.

A shard is a plain tar file (`shard-000000.tar`) whose consecutive members sharing a key form one
sample: `00001234.jpg` (or .jpeg/.png/.webp/.bmp) and `00001234.cls` (the integer label as text).
This is the WebDataset layout, so shards written by the `webdataset` package's `TarWriter` or its
`tarp`/`wids` tools read here, and shards written by `write_shards` read there.

The reader is Python's `tarfile` under a torch `IterableDataset`, not the `webdataset` package:
a training run here must resume mid-epoch *bit-exactly* (same samples, same order, same crops), which
needs the sample order to be a pure function of (seed, epoch, rank, worker) that can be replayed
without reading images. Computing that order ourselves is a few lines; the read path stays
sequential (each worker reads its shards front to back, never seeking between samples).

Order of one epoch, for `world_size` ranks of `num_workers` loader workers and batch `B`:

1. the shards are permuted by `(seed, epoch)`; their samples, concatenated, form the epoch's stream;
2. rank r takes the contiguous slice `[r * S, (r + 1) * S)` of it, `S = B * (N // (world_size * B))`
   (every rank gets the same number of full batches; the < world_size * B samples left over wait
   for the next epoch's permutation, like `DistributedSampler(drop_last=True)`);
3. that slice is cut into one contiguous *lane* per worker, lane l holding the batches
   l, l + W, l + 2W, ... of the rank (W = max(1, num_workers)), which is the order a DataLoader
   asks its workers for batches;
4. each lane is shuffled by a buffer of `shuffle_buffer` samples seeded by (seed, epoch, rank, lane).

Resuming after `k` batches of the epoch: lane l has served the batches j < k with j = l (mod W);
its first `B x (that many)` samples are skipped without being decoded (shards wholly consumed are
not opened), and the loader worker i serves lane (k + i) mod W, so batch k + i comes next, as in
the uninterrupted run. The order depends on num_workers and the world size: resume with both equal.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import os
import re
import tarfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from ..masks.multiblock import derive_seed

__all__ = ["SHARDS_PREFIX", "ShardDataset", "expand_urls", "write_shards", "count_samples", "index_shards",
           "buffer_shuffle_order", "IMAGE_EXTS"]

logger = logging.getLogger("openjepa.data")
SHARDS_PREFIX = "shards:"
INDEX_NAME = "openjepa-shards.json"  # {shard file name: {"samples": n, "bytes": size}} beside the shards
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "ppm")
_BRACE = re.compile(r"\{([^{}]*)\}")
_TAG_SHARDS, _TAG_LANE = 0x5A4D, 0x1A7E  # separate the seed streams of the shard permutation and the lanes


# --------------------------------------------------------------------------- shard lists
def _expand_braces(text: str) -> list[str]:
    """`a-{000..002}.tar` -> a-000.tar a-001.tar a-002.tar; `{x,y}` -> both; nested left to right."""
    m = _BRACE.search(text)
    if m is None:
        return [text]
    body, head, tail = m.group(1), text[:m.start()], text[m.end():]
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
    text = spec[len(SHARDS_PREFIX):] if spec.startswith(SHARDS_PREFIX) else spec
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
    key, group = None, {}
    while (member := tf.next()) is not None:
        if not member.isfile():
            continue
        k, ext = _split_name(member.name)
        if k != key and group:
            yield key, group  # type: ignore[misc]
            group = {}
        key = k
        group[ext] = member
    if group:
        yield key, group  # type: ignore[misc]


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
            tmp = folder / f".{INDEX_NAME}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(idx, indent=0, sort_keys=True))
            os.replace(tmp, folder / INDEX_NAME)
        except OSError:  # read-only dataset folder: count again next time
            pass
    return counts


def _decode(shard: str, key: str, group: dict[str, bytes]) -> tuple[Image.Image, int]:
    """PIL RGB image and integer label (-1 when the sample has no `.cls`) of one sample's members.

    As in WebDataset, an extension's last component names its type (`seg.png` is a PNG)."""
    img_ext = next((e for e in group if e.rsplit(".", 1)[-1] in IMAGE_EXTS), None)
    if img_ext is None:
        raise ValueError(f"sample {key!r} of shard {shard} has no image (members: {sorted(group)}; "
                         f"expected one of {', '.join(IMAGE_EXTS)})")
    try:
        img = Image.open(io.BytesIO(group[img_ext]))
        img = img.convert("RGB")
    except Exception as e:
        raise ValueError(f"cannot decode image {key}.{img_ext} of shard {shard}: {e}") from e
    cls = next((e for e in group if e.rsplit(".", 1)[-1] == "cls"), None)
    label = int(group[cls].decode().strip()) if cls is not None else -1
    return img, label


# --------------------------------------------------------------------------- orders
def _consumed(skip_batches: int, lane: int, lanes: int) -> int:
    """Batches j < skip_batches with j = lane (mod lanes): what lane `lane` served before a resume."""
    return (skip_batches - lane + lanes - 1) // lanes if skip_batches > lane else 0


def buffer_shuffle_order(n: int, buffer: int, rng: np.random.Generator) -> np.ndarray:
    """Output order of a shuffle buffer of `buffer` items over a stream of n items (as positions).

    The same law as WebDataset's `shuffle(buffer)`: fill the buffer, then repeatedly emit a random
    item from it and take in the next; at the end, emit what is left in random order. Output t
    comes from input position < t + buffer, so a sequential reader holds at most ~buffer items.
    """
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    buffer = max(1, min(int(buffer), n))
    draws = rng.random(n)
    pool = list(range(buffer))
    out = np.empty(n, dtype=np.int64)
    t = 0
    for i in range(buffer, n):
        j = int(draws[t] * len(pool))
        out[t] = pool[j]
        pool[j] = i
        t += 1
    rest = np.asarray(pool, dtype=np.int64)[rng.permutation(len(pool))]
    out[t:] = rest
    return out


class ShardDataset(IterableDataset):
    """Images (and labels) streamed from tar shards, transformed with per-sample seeded augmentations.

    Yields `(transform(img), label)` like the map-style datasets (wrapped by SeededTransformDataset):
    the augmentation of a sample is seeded by (seed, epoch, its global index), its position in the
    shard list, so it does not depend on which rank or worker reads it. `make_loader` calls
    `configure(...)` with the rank, world size, batch size, workers and batches to skip; `set_epoch`
    selects the epoch. `len()` is the number of samples; `ds[i]` reads one sample (slow: for plots).
    """

    def __init__(self, urls: str | Sequence[str], transform: Callable[[Image.Image], Any] | None = None,
                 seed: int = 0, shuffle_buffer: int = 1000, shuffle: bool = True,
                 counts: Sequence[int] | None = None) -> None:
        self.urls = expand_urls(urls) if isinstance(urls, str) else [str(u) for u in urls]
        self.counts = list(counts) if counts is not None else index_shards(self.urls)
        if len(self.counts) != len(self.urls):
            raise ValueError(f"{len(self.counts)} counts for {len(self.urls)} shards")
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self.transform, self.seed, self.shuffle_buffer, self.shuffle = transform, int(seed), int(shuffle_buffer), shuffle
        self.epoch = 0
        self.rank, self.world_size, self.batch_size, self.num_workers, self.skip_batches = 0, 1, 1, 0, 0
        self.num_skipped = 0

    # ----------------------------------------------------------------- configuration
    def __len__(self) -> int:
        return int(self.offsets[-1])

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order (and augmentations) the next iteration yields."""
        self.epoch = int(epoch)

    def configure(self, *, rank: int = 0, world_size: int = 1, batch_size: int = 1, num_workers: int = 0,
                  skip_batches: int = 0, seed: int | None = None, epoch: int | None = None,
                  shuffle: bool | None = None) -> "ShardDataset":
        """Where this process reads in the epoch (called by `make_loader` before each epoch's loader)."""
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if batch_size < 1 or skip_batches < 0 or num_workers < 0:
            raise ValueError(f"bad batch_size={batch_size}, skip_batches={skip_batches} or num_workers={num_workers}")
        self.rank, self.world_size, self.batch_size = int(rank), int(world_size), int(batch_size)
        self.num_workers, self.skip_batches = int(num_workers), int(skip_batches)
        if seed is not None:
            self.seed = int(seed)
        if epoch is not None:
            self.epoch = int(epoch)
        if shuffle is not None:
            self.shuffle = bool(shuffle)
        return self

    @property
    def batches_per_rank(self) -> int:
        """Full batches each rank reads per epoch."""
        return len(self) // (self.world_size * self.batch_size)

    # ----------------------------------------------------------------- the epoch's plan
    def shard_order(self, epoch: int | None = None) -> np.ndarray:
        """The shards' order in an epoch (a permutation seeded by (seed, epoch))."""
        epoch = self.epoch if epoch is None else epoch
        if not self.shuffle:
            return np.arange(len(self.urls))
        return np.random.default_rng(derive_seed(self.seed, epoch, _TAG_SHARDS)).permutation(len(self.urls))

    def _lane_batches(self, lane: int, lanes: int) -> int:
        n = self.batches_per_rank
        return max(0, (n - lane + lanes - 1) // lanes)

    def lane_plan(self, lane: int, lanes: int) -> tuple[list[tuple[int, int, int]], np.ndarray]:
        """(segments, order) of one lane of this rank: segments (shard, first, end) in stream order
        and the lane's output order as positions in that stream (all of it, consumed or not)."""
        b = self.batch_size
        first_batch = sum(self._lane_batches(i, lanes) for i in range(lane))
        start = (self.rank * self.batches_per_rank + first_batch) * b
        size = self._lane_batches(lane, lanes) * b
        order = self.shard_order()
        counts = np.asarray(self.counts, dtype=np.int64)[order]
        ends = np.cumsum(counts)
        segments: list[tuple[int, int, int]] = []
        pos, stop = start, start + size
        k = int(np.searchsorted(ends, pos, side="right"))
        while pos < stop:
            shard_start = int(ends[k] - counts[k])
            lo, hi = pos - shard_start, min(int(ends[k]), stop) - shard_start
            if hi > lo:
                segments.append((int(order[k]), lo, hi))
            pos += hi - lo
            k += 1
        if self.shuffle:
            rng = np.random.default_rng(derive_seed(self.seed, self.epoch, self.rank, lane, _TAG_LANE))
            lane_order = buffer_shuffle_order(size, self.shuffle_buffer, rng)
        else:
            lane_order = np.arange(size, dtype=np.int64)
        return segments, lane_order

    def global_indices(self, lane: int, lanes: int, skip_batches: int = 0) -> np.ndarray:
        """Global sample indices a lane yields after `skip_batches` batches of the rank (for tests)."""
        segments, order = self.lane_plan(lane, lanes)
        flat = np.concatenate([np.arange(lo, hi) + self.offsets[s] for s, lo, hi in segments]) if segments \
            else np.zeros(0, dtype=np.int64)
        return flat[order[_consumed(skip_batches, lane, lanes) * self.batch_size:]]

    # ----------------------------------------------------------------- iteration
    def __iter__(self) -> Iterator[tuple[Any, int]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        lanes = max(1, self.num_workers)
        if workers != lanes:
            raise RuntimeError(f"ShardDataset was configured for {self.num_workers} loader workers but runs "
                               f"in {workers}; build its DataLoader with make_loader")
        k = self.skip_batches
        lane = (k + worker) % lanes
        segments, order = self.lane_plan(lane, lanes)
        yield from self._stream(segments, order[_consumed(k, lane, lanes) * self.batch_size:])

    def _stream(self, segments: list[tuple[int, int, int]], order: np.ndarray) -> Iterator[tuple[Any, int]]:
        if len(order) == 0:
            return
        needed = set(order.tolist())
        first = int(order.min()) if len(order) else 0
        pending: dict[int, tuple[int, str, str, dict[str, bytes]]] = {}
        t, pos = 0, 0
        for shard, lo, hi in segments:
            if t == len(order):
                return
            if pos + (hi - lo) <= first:  # every sample of this segment was consumed: not even opened
                pos += hi - lo
                continue
            path = self.urls[shard]
            with tarfile.open(path, "r:") as tf:
                for m, (key, members) in enumerate(_iter_groups(tf)):
                    if m < lo:
                        continue
                    if m >= hi:
                        break
                    if pos in needed:
                        data = {ext: tf.extractfile(info).read() for ext, info in members.items()}  # type: ignore[union-attr]
                        pending[pos] = (int(self.offsets[shard]) + m, path, key, data)
                    pos += 1
                    while t < len(order) and int(order[t]) in pending:
                        yield self._sample(*pending.pop(int(order[t])))
                        t += 1
        if t != len(order):
            raise RuntimeError(f"shards ended after {t} of {len(order)} samples: a shard changed since it was "
                               f"indexed; delete {INDEX_NAME} beside the shards")

    def _sample(self, gidx: int, path: str, key: str, data: dict[str, bytes]) -> tuple[Any, int]:
        img, label = _decode(path, key, data)
        if self.transform is None:
            return img, label
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, self.epoch, gidx))
            return self.transform(img), label

    def __getitem__(self, index: int) -> tuple[Any, int]:
        """One sample by global index (reads its shard up to it): for plots and inspection, not training."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} of {len(self)}")
        shard = int(np.searchsorted(self.offsets, index, side="right") - 1)
        m = index - int(self.offsets[shard])
        with tarfile.open(self.urls[shard], "r:") as tf:
            for i, (key, members) in enumerate(_iter_groups(tf)):
                if i == m:
                    data = {ext: tf.extractfile(info).read() for ext, info in members.items()}  # type: ignore[union-attr]
                    return self._sample(index, self.urls[shard], key, data)
        raise IndexError(f"sample {index} not found in {self.urls[shard]}")


# --------------------------------------------------------------------------- writing
def _encode(img: Any, fmt: str, quality: int) -> bytes:
    if isinstance(img, (bytes, bytearray, memoryview)):  # already encoded (e.g. a JPEG file's bytes): kept as is
        return bytes(img)
    if isinstance(img, torch.Tensor):
        img = img.detach().cpu().numpy()
        if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
            img = img.transpose(1, 2, 0)
    if isinstance(img, np.ndarray):
        arr = img
        if arr.dtype != np.uint8:
            arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        img = Image.fromarray(np.ascontiguousarray(arr))
    if not isinstance(img, Image.Image):
        raise TypeError(f"write_shards needs PIL images, uint8 arrays (H, W[, C]) or tensors, got {type(img).__name__}")
    buf = io.BytesIO()
    pil_fmt = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt]
    img.convert("RGB").save(buf, format=pil_fmt, **({"quality": quality} if pil_fmt in ("JPEG", "WEBP") else {}))
    return buf.getvalue()


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed metadata: same inputs, same bytes
    info.uname = info.gname = ""
    tf.addfile(info, io.BytesIO(data))


def write_shards(images: Iterable[Any], labels: Iterable[int] | None, folder: str | os.PathLike,
                 per_shard: int = 1000, prefix: str = "shard", fmt: str = "jpg", quality: int = 95) -> list[Path]:
    """Write images (PIL, uint8 arrays or tensors) and integer labels as `{prefix}-000000.tar`, ...

    Each sample is `{index:08d}.{fmt}` plus `{index:08d}.cls`; `per_shard` samples per tar. Images
    given as `bytes` are stored unchanged (pass a JPEG file's bytes with fmt="jpg" to avoid
    re-encoding a dataset). Also
    writes the `openjepa-shards.json` index (sample counts) so readers need not scan the headers.
    Returns the shard paths; `shards:{folder}/{prefix}-{000000..N}.tar` reads them back.
    """
    fmt = fmt.lower()
    if fmt not in ("jpg", "jpeg", "png", "webp"):
        raise ValueError(f"fmt must be jpg, png or webp, got {fmt!r}")
    if per_shard < 1:
        raise ValueError(f"per_shard must be >= 1, got {per_shard}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    label_iter = iter(labels) if labels is not None else None
    paths: list[Path] = []
    counts: list[int] = []
    tf: tarfile.TarFile | None = None
    for i, img in enumerate(images):
        if i % per_shard == 0:
            if tf is not None:
                tf.close()
            paths.append(folder / f"{prefix}-{len(paths):06d}.tar")
            counts.append(0)
            tf = tarfile.open(paths[-1], "w", format=tarfile.USTAR_FORMAT)
        key = f"{i:08d}"
        _add(tf, f"{key}.{fmt}", _encode(img, fmt, quality))  # type: ignore[arg-type]
        if label_iter is not None:
            _add(tf, f"{key}.cls", str(int(next(label_iter))).encode())  # type: ignore[arg-type]
        counts[-1] += 1
    if tf is not None:
        tf.close()
    idx = _read_index(folder)
    idx.update({p.name: {"samples": c, "bytes": p.stat().st_size} for p, c in zip(paths, counts)})
    (folder / INDEX_NAME).write_text(json.dumps(idx, indent=0, sort_keys=True))
    return paths
