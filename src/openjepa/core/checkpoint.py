"""Checkpoints: self-describing, written atomically, verified by checksum, loaded without unpickling code.

A run folder keeps `ckpt-step00001234.pt` files (the last K) and, beside each, a small JSON sidecar
with its SHA-256, size and step. Loading verifies the checksum; `find_resumable` walks back from the
newest checkpoint to the newest one that verifies, saying why it skipped any, and never silently
starts a fresh run.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_path, atomic_write_text
from .hashing import sha256_file

logger = logging.getLogger("openjepa.checkpoint")
FORMAT = "openjepa"
FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt-step(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (corrupt, unsafe, or of another architecture)."""


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed (disk full, folder gone or unwritable); the message names the last good one."""


def atomic_save(obj: Any, path: str | Path) -> str:
    """torch.save to a temporary file in the same folder, fsync, then rename; returns the SHA-256.

    A crash at any point leaves either the old file or the new one, never a torn file.
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
        digest = sha256_file(tmp)
    return digest


def safe_load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """torch.load with weights_only=True: tensors and plain containers only, never arbitrary code."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {path}: it needs arbitrary unpickling (code execution), which openjepa "
            f"never does. If you trust the file, re-save its tensors as plain state dicts or "
            f"safetensors. Details: {str(e).splitlines()[0]}"
        ) from e
    except Exception as e:  # zip, pickle-opcode, unicode, EOF errors: all mean a damaged file
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({first}); use an earlier checkpoint") from e


def checkpoint_path(folder: str | Path, step: int) -> Path:
    """Where the checkpoint of a given step lives in a run folder."""
    return Path(folder) / f"ckpt-step{step:08d}.pt"


def list_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoints in a run folder, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def save_checkpoint(
    state: dict, folder: str | Path, step: int, keep_last: int = 3, min_free_bytes: int | None = None
) -> Path:
    """Write a run checkpoint atomically with its checksum sidecar, then prune to the last `keep_last`."""
    folder = Path(folder)
    path = checkpoint_path(folder, step)
    if min_free_bytes is not None:
        check_free_space(folder, min_free_bytes)
    state = {"format": FORMAT, "format_version": FORMAT_VERSION, **state}
    # A file of the same step exists only if resuming skipped it as corrupt: remove it (then its sidecar),
    # so that a kill between writing the new file and its sidecar never pairs a file with a wrong checksum.
    path.unlink(missing_ok=True)
    path.with_suffix(".json").unlink(missing_ok=True)
    digest = atomic_save(state, path)
    meta = {"file": path.name, "sha256": digest, "bytes": path.stat().st_size, "step": step}
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=1))
    # Prune only older checkpoints: a newer (corrupt, skipped) one must never push out the one just written.
    older = [p for s, p in list_checkpoints(folder) if s < step]
    for old in older[: max(0, len(older) - (keep_last - 1))]:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)
    return path


def remove_partial_writes(folder: str | Path) -> list[Path]:
    """Delete the hidden `.*.tmp` files an interrupted atomic write leaves in a run folder; returns them.

    They are never loaded (their names do not match `ckpt-step*.pt`) but each can be as large as a
    checkpoint, so a run killed repeatedly mid-write would otherwise fill the disk.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        logger.info(
            "removed %d partial file(s) left by an interrupted write in %s: %s",
            len(stale),
            folder,
            ", ".join(p.name for p in stale),
        )
    return stale


def verify_checkpoint(path: str | Path) -> None:
    """Raise CheckpointError if the file's checksum differs from its sidecar (or the file is missing)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    sidecar = path.with_suffix(".json")
    if sidecar.exists():
        try:
            meta = json.loads(sidecar.read_text())
            size, digest = int(meta["bytes"]), str(meta["sha256"])
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"checksum file {sidecar} is unreadable ({e}); cannot vouch for {path.name}") from e
        if path.stat().st_size != size:
            raise CheckpointError(
                f"checkpoint {path} has {path.stat().st_size} bytes, its checksum file "
                f"says {size} (truncated or corrupted on disk)"
            )
        if sha256_file(path) != digest:
            raise CheckpointError(f"checkpoint {path} does not match its SHA-256 checksum (corrupted on disk)")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Verify and safely load one openjepa checkpoint."""
    verify_checkpoint(path)
    state = safe_load(path, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an openjepa checkpoint (for a reference .pth.tar use "
            f"openjepa.interop or `openjepa convert --from reference`)"
        )
    return state


def find_resumable(folder: str | Path, map_location: str | torch.device = "cpu") -> tuple[Path, dict] | None:
    """Newest checkpoint in `folder` that verifies and loads; None if the folder has none at all.

    Corrupt ones are skipped with a warning naming them; if every one is corrupt, raise rather
    than let a run silently restart from step 0.
    """
    found = list_checkpoints(folder)
    if not found:
        return None
    problems = []
    for _step, path in reversed(found):
        try:
            return path, load_checkpoint(path, map_location)
        except CheckpointError as e:
            logger.warning("skipping checkpoint %s: %s; falling back to the previous one", path.name, e)
            problems.append(str(e))
    raise CheckpointError(f"no usable checkpoint in {folder}: " + " | ".join(problems))


def check_free_space(folder: str | Path, needed_bytes: int) -> None:
    """Raise OSError naming the folder if it cannot hold `needed_bytes` more (or is not writable)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot create output folder {folder} ({e.strerror or e}); choose another logging.folder") from e
    if not os.access(folder, os.W_OK):
        raise OSError(f"output folder {folder} is not writable; choose another logging.folder")
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise OSError(
            f"only {free / 2**20:.0f} MiB free in {folder}, a checkpoint needs about "
            f"{needed_bytes / 2**20:.0f} MiB; free some space or choose another logging.folder"
        )
