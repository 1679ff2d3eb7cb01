"""A one-time conversion of an image folder into raw RGB pixels, the fastest stored form to train from.

    python -m openjepa.data.raw_folder SRC DST [--max-side N] [--workers N]

Every image under SRC (found as `scan_images` finds them) is decoded once, as `read_rgb` decodes it
(EXIF orientation applied, transparency on white), and written to the same relative path under DST
with `.ppm` appended (`train/n01440764/x.JPEG` -> `train/n01440764/x.JPEG.ppm`): a binary PPM, a
short text header and the 8-bit RGB rows. DST is an ordinary image folder (`data.dataset:
folder:DST`); the fast decode path reads only the rows of each crop (data/images.py
`read_rgb_region`), with no decoding at all.

What it changes: nothing in the pixels, unless `max_side` shrinks the pictures whose longer side
exceeds it (Pillow's `thumbnail`, as `read_rgb(max_side=...)`). A subset file names the original
files: convert the listed ones (or list the new names). What it costs: 3 bytes a pixel on disk
(a 500x375 photo: 562 KB, against about 80 KB as a quality-90 JPEG: about 7x; ImageNet's train
split, 1.28 M pictures averaging about 470x390, would take about 0.7 TB) and one decode per image,
once (docs/performance.md gives the measured rate). Rerunning skips the files already written.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .images import read_rgb, scan_images

__all__ = ["convert_to_raw_folder"]

logger = logging.getLogger("openjepa.data")


def _convert_one(job: tuple[str, str, int | None]) -> int:
    """Write one image as a binary PPM; its size in bytes (0 when it was already there, -1 when unreadable)."""
    src, dst, max_side = job
    if os.path.exists(dst) and os.path.getmtime(dst) >= os.path.getmtime(src):
        return 0
    try:
        im = read_rgb(src, max_side)
    except Exception as exc:  # an unreadable file is left out, as training would skip it
        logger.warning("skipping unreadable image %s (%s: %s)", src, type(exc).__name__, exc)
        return -1
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = os.path.join(os.path.dirname(dst), f".{os.path.basename(dst)}.tmp")  # hidden: never scanned
    im.save(tmp, format="PPM")
    os.replace(tmp, dst)
    return os.path.getsize(dst)


def convert_to_raw_folder(
    src: str | os.PathLike, dst: str | os.PathLike, max_side: int | None = None, workers: int = 1
) -> dict[str, float]:
    """Convert the image folder `src` into the raw-pixel folder `dst` (see the module docstring).

    Returns what was done: images written, skipped as present, unreadable; bytes written; seconds.
    """
    root, out = Path(src).expanduser().resolve(), Path(dst).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"no such image folder: {root}")
    if out == root or root in out.parents:
        raise ValueError(f"write the raw folder outside the source folder, not to {out}")
    files, _ = scan_images(root)
    jobs = [(f, str(out / (os.path.relpath(f, root) + ".ppm")), max_side) for f in files]
    t0 = time.perf_counter()
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            sizes = list(pool.map(_convert_one, jobs, chunksize=64))
    else:
        sizes = [_convert_one(job) for job in jobs]
    return {
        "written": sum(s > 0 for s in sizes),
        "present": sizes.count(0),
        "unreadable": sizes.count(-1),
        "bytes": sum(s for s in sizes if s > 0),
        "seconds": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> None:
    """Command line: convert SRC into DST and print what was done."""
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("src", help="an image folder (e.g. DIR with DIR/train/<class>/*.JPEG)")
    p.add_argument("dst", help="the raw-pixel folder to write (then train with data.dataset=folder:DST)")
    p.add_argument("--max-side", type=int, default=None, help="shrink pictures whose longer side exceeds this")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    done = convert_to_raw_folder(args.src, args.dst, args.max_side, args.workers)
    print(
        f"{done['written']} images written ({done['bytes'] / 1e9:.2f} GB), {done['present']} already there, "
        f"{done['unreadable']} unreadable, in {done['seconds']:.0f} s"
    )


if __name__ == "__main__":
    main()
