"""Fetching the official files of the named datasets: from the mirror or the official URLs, md5-checked.

The transfer itself (with its progress bar) is torchvision's `download_url`. Around it: a file is
written under a hidden temporary name and renamed into `downloads/` only once its md5 matches the
catalog (core/atomic.py), so a partial or corrupt download is never used; one left by a killed run
is deleted and the download restarted. With no network, `DownloadError` says in one line which
files to fetch by hand, from where, and into which folder.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from torchvision.datasets.utils import calculate_md5, download_url

from ..core.atomic import atomic_path
from .catalog import HOME_ENV, MIRROR_ENV, NamedDataset, RemoteFile, downloads_dir

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process lock (one process at a time fills the cache)
    fcntl = None  # type: ignore[assignment]

__all__ = ["ChecksumError", "DownloadError", "dataset_lock", "fetch_files", "source_urls"]

logger = logging.getLogger("openjepa.data")
PROBE_TIMEOUT_S = 30


class DownloadError(OSError):
    """A dataset file could not be fetched; the message says how to provide it by hand."""


class ChecksumError(DownloadError):
    """A file's md5 is not the catalog's: it is not the official file (or it is incomplete)."""


def _mirror_base() -> str | None:
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return None
    if "://" in mirror:
        return mirror.rstrip("/") + "/"
    return Path(mirror).expanduser().resolve().as_uri() + "/"


def source_urls(entry: NamedDataset, file: RemoteFile) -> tuple[str, ...]:
    """Where a file of a dataset is fetched from: `<mirror>/<name>/<file>` alone when
    `$OPENJEPA_DATA_MIRROR` is set, else the file's official URLs."""
    base = _mirror_base()
    return (f"{base}{entry.name}/{file.name}",) if base else file.urls


@contextmanager
def dataset_lock(home: Path, name: str) -> Iterator[None]:
    """Hold an exclusive lock on one dataset of the cache, so concurrent processes fetch and convert it once."""
    folder = home / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.lock", "a+b") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def _check(path: Path, file: RemoteFile, origin: str) -> None:
    got = calculate_md5(path)
    if got != file.md5:
        raise ChecksumError(
            f"{file.name} {origin} has md5 {got}, not the official {file.md5}: it is not the official file "
            f"or it is incomplete"
        )


def _probe(url: str) -> str | None:
    """None when `url` answers, else why not (no network, not found, refused)."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "openjepa"})
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S):
            return None
    except urllib.error.HTTPError as exc:
        return None if exc.code in (405, 501) else f"HTTP {exc.code} {exc.reason}"  # HEAD itself refused: try GET
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return str(getattr(exc, "reason", None) or exc)


def _transfer(url: str, dest: Path) -> None:
    if url.startswith("file:"):  # a local mirror: a copy (torchvision's transfer needs an HTTP response)
        with urllib.request.urlopen(url) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    else:
        download_url(url, str(dest.parent), dest.name)


class _TransferFailed(Exception):
    pass


def _download(url: str, dest: Path, file: RemoteFile) -> str | None:
    """Download `url` to `dest` through a temporary file; None on success, else why it could not be fetched
    (the next source is tried then). A download with the wrong md5 raises ChecksumError."""
    why = _probe(url)
    if why is not None:
        return why
    for stale in dest.parent.glob(f".{dest.name}.*.tmp"):  # left by a killed run: restarted, never used
        stale.unlink(missing_ok=True)
    logger.info("downloading %s from %s", file.name, url)
    try:
        with atomic_path(dest) as tmp:  # removed on any error, renamed onto dest only after the md5 check
            Path(tmp).unlink()  # torchvision skips a download whose target exists
            try:
                _transfer(url, Path(tmp))
            except (urllib.error.URLError, OSError, RuntimeError, http.client.HTTPException) as exc:
                raise _TransferFailed(f"the transfer failed: {type(exc).__name__}: {exc}") from exc
            if not Path(tmp).is_file():
                raise _TransferFailed("the transfer wrote no file")
            try:
                _check(Path(tmp), file, f"downloaded from {url}")
            except ChecksumError as exc:
                raise ChecksumError(f"{exc}; the download was deleted") from None
    except _TransferFailed as exc:
        return str(exc)
    return None


def _by_hand(entry: NamedDataset, missing: Sequence[RemoteFile], tried: str, why: str) -> DownloadError:
    folder = downloads_dir(entry)
    via = f" from ${MIRROR_ENV} at {tried}: {why}" if _mirror_base() else f" ({why})"
    urls = ", ".join(f.urls[0] for f in missing)
    return DownloadError(
        f"cannot download {missing[0].name}{via}; fetch {urls} by hand into {folder}/ "
        f"(${HOME_ENV}/downloads/{entry.name}/), then run the command again"
    )


def fetch_files(entry: NamedDataset) -> list[Path]:
    """The verified local copies of a dataset's files in its downloads folder: those already there (put
    by a download or by hand), the others downloaded. A copy whose md5 is wrong raises ChecksumError
    and is never used. Call it holding `dataset_lock` (it deletes the leftovers of killed downloads)."""
    files, folder = entry.files, downloads_dir(entry)
    paths = []
    for i, file in enumerate(files):
        dest = folder / file.name
        if dest.is_file():
            try:
                _check(dest, file, f"in {folder}")
            except ChecksumError as exc:
                raise ChecksumError(f"{exc}; delete it, or replace it with {file.urls[0]}") from None
            paths.append(dest)
            continue
        urls = source_urls(entry, file)
        reasons = []
        for url in urls:  # the next source only when one does not answer
            why = _download(url, dest, file)
            if why is None:
                break
            reasons.append(why)
        else:
            missing = [f for f in files[i:] if not (folder / f.name).is_file()]
            raise _by_hand(entry, missing, urls[0], reasons[0])
        paths.append(dest)
    return paths
