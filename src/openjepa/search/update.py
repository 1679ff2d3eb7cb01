"""Bringing an `IndexStore` up to date with image files: what is new, changed or gone, and embedding it.

A file is embedded again only when its size or modification time differ from those recorded
with its row. Files decode through `openjepa.data.images.read_rgb` (the one image input path)
and become features through `openjepa.models.pooling.pool_features` (the one feature path), in
batches, optionally with decoding worker processes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data.images import image_extensions, read_rgb, scan_images
from ..models.pooling import pool_features
from .store import IndexStore, normalise_features

__all__ = ["ImageFiles", "UpdateReport", "embed_files", "find_images", "update_store"]

logger = logging.getLogger("openjepa.search")


@dataclass
class UpdateReport:
    """What `Index.build` / `Index.add` did to the index."""

    added: int = 0  # files new to the index, embedded
    changed: int = 0  # files whose size or modification time changed, embedded again
    unchanged: int = 0  # files already indexed as they are, not embedded
    removed: int = 0  # entries dropped: file gone (prune) or now unreadable
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): unreadable files
    seconds: float = 0.0

    @property
    def embedded(self) -> int:
        """Files embedded by the update (added or changed)."""
        return self.added + self.changed

    def summary(self) -> str:
        """One line: the counts and the time taken."""
        return (
            f"{self.added} added, {self.changed} changed, {self.unchanged} unchanged, "
            f"{self.removed} removed, {len(self.skipped)} unreadable skipped ({self.seconds:.1f} s)"
        )


class ImageFiles(Dataset):
    """Preprocessed images by position; unreadable files come back as their error message."""

    def __init__(self, paths: Sequence[str], preprocess: Any) -> None:
        self.paths, self.preprocess = list(paths), preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return i, self.preprocess(read_rgb(self.paths[i])), None
        except Exception as e:  # noqa: BLE001 - any decode failure means "skip this file"
            return i, None, f"{type(e).__name__}: {e}".strip()


def _collate(items: list) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    """(positions of the readable files, their (B, 3, H, W) batch or None, [(position, error)])."""
    ok = [(i, x) for i, x, err in items if err is None]
    bad = [(i, err) for i, x, err in items if err is not None]
    batch = torch.stack([x for _, x in ok]) if ok else None
    return [i for i, _ in ok], batch, bad


def _input_placement(encoder: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and dtype the encoder's weights are on: where its input batches go."""
    p = next(encoder.parameters(), None)
    return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)


@torch.no_grad()
def embed_files(
    encoder: nn.Module,
    paths: list[str],
    *,
    pooling: str,
    dtype: torch.dtype,
    dim: int,
    batch_size: int,
    num_workers: int = 0,
    bar: Any = None,
) -> tuple[torch.Tensor, list[int], list[tuple[int, str]]]:
    """(normalised `dtype` features (n_ok, D) of the readable files, their positions in `paths`, [(position, error)]).

    The encoder runs in eval mode (its previous mode is restored); `bar` (a tqdm) advances per file.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    loader = DataLoader(
        ImageFiles(paths, encoder.preprocess),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
    )
    device, in_dtype = _input_placement(encoder)
    chunks: list[torch.Tensor] = []
    ok: list[int] = []
    bad: list[tuple[int, str]] = []
    was_training = encoder.training
    encoder.eval()
    try:
        for idx, batch, errors in loader:
            bad.extend(errors)
            if batch is not None:
                out = pool_features(encoder, batch.to(device=device, dtype=in_dtype), pooling)  # (B, D) fp32
                chunks.append(normalise_features(out).to(dtype))
                ok.extend(idx)
            if bar is not None:
                bar.update(len(idx) + len(errors))
    finally:
        encoder.train(was_training)
    feats = torch.cat(chunks) if chunks else torch.zeros(0, dim)
    return feats, ok, bad


def find_images(
    images: Any, extensions: Iterable[str] | None = None, require_files: bool = False
) -> tuple[list[str], list[str]]:
    """(image files, roots) under `images` (see `scan_images`); require_files: ValueError when there are none."""
    exts = frozenset(extensions) if extensions is not None else image_extensions()
    files, roots = scan_images(images, exts)
    if require_files and not files:
        raise ValueError(f"no image files ({' '.join(sorted(exts))}) found under {', '.join(roots)}")
    return files, roots


def _file_stat(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return int(st.st_size), int(st.st_mtime_ns)


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def _plan(store: IndexStore, files: list[str], report: UpdateReport) -> tuple[list[str], list[tuple[int, int]]]:
    """(files to embed, their (size, mtime_ns)); counts the unchanged and the unreadable stats in `report`."""
    todo: list[str] = []
    todo_stats: list[tuple[int, int]] = []
    for path in files:
        try:
            st = _file_stat(path)
        except OSError as e:
            report.skipped.append((path, f"{type(e).__name__}: {e}"))
            continue
        row = store.row(path)
        if row is not None and store.stat(row) == st:
            report.unchanged += 1
            continue
        todo.append(path)
        todo_stats.append(st)
    return todo, todo_stats


def _embed_part(
    store: IndexStore,
    encoder: nn.Module,
    part: list[str],
    part_stats: list[tuple[int, int]],
    report: UpdateReport,
    batch_size: int,
    num_workers: int,
    bar: Any,
) -> None:
    """Embed `part` into the store, replacing changed rows; unreadable files are reported and lose their row."""
    feats, ok, bad = embed_files(
        encoder,
        part,
        pooling=store.pooling,
        dtype=store.dtype,
        dim=store.dim,
        batch_size=batch_size,
        num_workers=num_workers,
        bar=bar,
    )
    for i, err in bad:
        report.skipped.append((part[i], err))
        logger.warning("skipping unreadable image %s (%s)", part[i], err)
    report.removed += store.remove([part[i] for i, _ in bad if part[i] in store])
    new_paths = [part[i] for i in ok]
    changed = sum(p in store for p in new_paths)
    report.changed += changed
    report.added += len(new_paths) - changed
    if new_paths:
        store.add_features(feats, new_paths, stats=[part_stats[i] for i in ok])


def update_store(
    store: IndexStore,
    encoder: nn.Module,
    files: list[str],
    roots: list[str],
    *,
    prune: bool,
    batch_size: int,
    num_workers: int,
    progress: bool,
    save: Callable[[], Any] | None,
    save_every: int,
) -> UpdateReport:
    """Embed the new and changed `files` into `store` (prune: drop rows under `roots` whose file is gone).

    save: called every `save_every` embedded images and at the end, so an interrupted run loses at
    most that much work. The encoder is not checked here (the caller does).
    """
    report = UpdateReport()
    todo, todo_stats = _plan(store, files, report)
    if prune:
        present = set(files)
        report.removed += store.remove([p for p in store.paths if _under(p, roots) and p not in present])

    from tqdm.auto import tqdm

    step = max(1, int(save_every)) if save is not None else max(1, len(todo))
    with tqdm(
        total=len(todo),
        disable=not progress or not todo,
        desc=f"embed {len(todo)} images",
        dynamic_ncols=True,
        unit="img",
    ) as bar:
        for start in range(0, len(todo), step):
            _embed_part(
                store,
                encoder,
                todo[start : start + step],
                todo_stats[start : start + step],
                report,
                batch_size,
                num_workers,
                bar,
            )
            if save is not None and start + step < len(todo):
                save()
    if save is not None:
        save()
    report.skipped.sort()
    return report
