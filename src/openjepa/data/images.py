"""The one image input path: which files are images, and how a file becomes an RGB picture.

Training, evaluation, `Encoder.embed`, `openjepa index` and shard writing all list and decode
through here, so a phone photo (EXIF orientation) or a transparent PNG (alpha) gives the same
pixels, and a folder the same file list, whichever command reads it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO

_PATHLIKE = (str, os.PathLike)
_ORIENTATION = 0x0112  # the EXIF tag ImageOps.exif_transpose reads
# (top, left, height, width) of a crop, in pixels of the upright picture
Box = tuple[int, int, int, int]

# The formats people keep photos and datasets in; only those this Pillow build can decode are used.
_COMMON_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".png",
    ".bmp",
    ".dib",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
    ".pbm",
    ".pnm",
    ".tga",
    ".ico",
    ".avif",
    ".heic",
    ".heif",
    ".jp2",
    ".j2k",
    ".qoi",
)


def image_extensions(extra: Iterable[str] = ()) -> frozenset[str]:
    """Lower-case suffixes (with the dot) of the common image formats Pillow can open here, plus `extra`."""
    from PIL import Image

    Image.init()
    readable = {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    exts = {e for e in _COMMON_EXTENSIONS if e in readable}
    exts |= {("." + e.lstrip(".")).lower() for e in extra}
    return frozenset(exts)


def scan_images(images: Any, extensions: Iterable[str] | None = None) -> tuple[list[str], list[str]]:
    """(image files, roots) of a folder, a file, or a list of them.

    Folders are walked recursively (symlinked folders are not followed; hidden files and folders,
    e.g. `.thumbnails` or macOS `._x.jpg` files, are skipped); a file given by name is taken whatever
    its suffix. Paths are absolute and de-duplicated, in the order given (a folder's files in sorted
    order). `roots` are the absolute folders and files given, so that an update can tell which index
    entries it was asked to revisit.
    """
    items = [images] if isinstance(images, _PATHLIKE) else list(images)
    if not items:
        raise ValueError("no images given (expected a folder, an image file or a list of them)")
    exts = frozenset(extensions) if extensions is not None else image_extensions()
    found: dict[str, None] = {}  # ordered set
    roots: list[str] = []
    for item in items:
        if not isinstance(item, _PATHLIKE):
            raise TypeError(f"expected image paths or folders, got {type(item).__name__}")
        p = os.path.abspath(os.fspath(item))
        if os.path.isdir(p):
            roots.append(p)
            inside = []
            for folder, dirs, files in os.walk(p):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                inside += [
                    os.path.join(folder, name)
                    for name in files
                    if not name.startswith(".") and os.path.splitext(name)[1].lower() in exts
                ]
            found.update(dict.fromkeys(sorted(inside)))
        elif os.path.isfile(p):
            roots.append(p)
            found[p] = None
        else:
            raise FileNotFoundError(f"no such image or folder: {item}")
    return list(found), roots


def _rgb(im: Any) -> Any:
    """A freshly decoded PIL image (changed in place) as a new RGB image: EXIF orientation applied,
    transparent pixels on white."""
    from PIL import Image, ImageOps

    ImageOps.exif_transpose(im, in_place=True)  # phone photos: honour the orientation tag
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        # Transparent pixels become white (as browsers show them), not whatever colour they hold.
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, rgba)
    return im.convert("RGB")


def _load_rgb(im: Any) -> Any:
    """Decode an opened PIL image (Image.open only reads the header) as RGB: see `_rgb`."""
    im.load()
    return _rgb(im)


def decode_rgb(data: bytes | bytearray | memoryview | BinaryIO | str, max_side: int | None = None) -> Any:
    """Decode an encoded image (its bytes, an open binary file or a file name) fully as RGB.

    Raises (OSError, ValueError, SyntaxError, ...) on anything Pillow cannot decode, including
    truncated data; callers that skip unreadable images catch `Exception`.
    """
    from PIL import Image

    fp = io.BytesIO(bytes(data)) if isinstance(data, (bytes, bytearray, memoryview)) else data
    with Image.open(fp) as im:
        im = _load_rgb(im)
    if max_side is not None and max(im.size) > max_side:
        im.thumbnail((max_side, max_side))
    return im


def read_rgb(path: str | os.PathLike, max_side: int | None = None) -> Any:
    """Decode an image file fully as an RGB PIL image (optionally shrunk to at most `max_side` pixels).

    EXIF orientation is applied and transparency composited on white (see `decode_rgb`). Raises on
    anything Pillow cannot decode, including truncated files; callers that skip them catch `Exception`.
    """
    return decode_rgb(os.fspath(path), max_side)  # by name, so Pillow's errors name the file


def read_rgb_region(path: str | os.PathLike, plan: Callable[[Any], Box], min_size: tuple[int, int]) -> tuple[Any, Box]:
    """Decode an image file for one crop: (its RGB pixels, a (3, h, w) uint8 tensor; the crop box in them).

    `plan(img)` is shown the picture before its pixels are decoded (a PIL image whose `size` is the
    full upright size) and returns the box to crop. A JPEG is decoded at the smallest DCT scale
    (1/2, 1/4 or 1/8, Pillow's `draft`) at which the box still spans `min_size` (height, width)
    pixels, so a downscaled crop decodes fewer pixels, and the box is mapped onto the decoded pixels.
    Of a raw 8-bit RGB file (binary PPM, as data/raw_folder.py writes) only the box's rows are read.
    Other formats, and JPEGs with an EXIF orientation, are decoded whole as `read_rgb` does
    (orientation applied, transparency on white). Raises on undecodable files, as `read_rgb` does.
    """
    from PIL import Image

    with open(path, "rb") as f:
        if f.read(2) == b"P6":
            f.seek(0)
            raw = _raw_region(f, plan)
            if raw is not None:
                return raw
        f.seek(0)
        data = bytearray(os.fstat(f.fileno()).st_size)  # at once: decoding from memory is faster
        f.readinto(data)
    im = Image.open(io.BytesIO(data))
    if im.format != "JPEG" or im.getexif().get(_ORIENTATION, 1) != 1:
        full = _load_rgb(im)
        return _tensor(full), plan(full)
    return _jpeg_region(im, data, plan, min_size)


def _raw_region(f: io.BufferedReader, plan: Callable[[Any], Box]) -> tuple[Any, Box] | None:
    """The rows of `plan`'s box of an open binary PPM of 8-bit RGB pixels; None for other PPMs."""
    import torch
    from PIL import Image

    im = Image.open(f)
    decoder, _, offset, args = im.tile[0]
    if im.mode != "RGB" or decoder != "raw" or args not in ("RGB", ("RGB", 0, 1)):
        return None  # 16-bit or another maxval: Pillow's decoder scales the values
    top, left, h, w = plan(im)
    row = 3 * im.size[0]
    f.seek(offset + top * row)
    rows = bytearray(h * row)
    if f.readinto(rows) != len(rows):
        raise OSError(f"{f.name}: truncated raw image (expected {h * row} bytes from row {top})")
    pixels = torch.frombuffer(rows, dtype=torch.uint8).view(h, im.size[0], 3).permute(2, 0, 1)
    return pixels, (0, left, h, w)


def _jpeg_region(im: Any, data: bytearray, plan: Callable[[Any], Box], min_size: tuple[int, int]) -> tuple[Any, Box]:
    """`read_rgb_region` of an upright JPEG opened from `data`: decoded at the smallest scale the box allows."""
    box = plan(im)
    width, height = im.size
    r = next((r for r in (8, 4, 2) if box[2] >= r * min_size[0] and box[3] >= r * min_size[1]), 1)
    if r == 1 and im.mode in ("RGB", "L"):
        pixels = _decode_jpeg(data)
        if pixels is not None:
            return pixels, box
    if r > 1:
        _, decoded = im.draft("RGB", (width // r, height // r)) or (None, (0, 0, width, height))
        r = round(width / decoded[2])  # the scale Pillow chose: the decoded image is ceil(size / r)
    im.load()
    pixels = _tensor(im if im.mode == "RGB" else im.convert("RGB"))
    return pixels, _scaled_box(box, r, pixels.shape[1], pixels.shape[2])


def _decode_jpeg(data: bytearray) -> Any:
    """A JPEG's full-size RGB pixels as (3, H, W) uint8 by torchvision's libjpeg-turbo decoder: the same
    pixels as Pillow's, straight into a tensor (about 0.3 ms faster for a 500x375 photo than Pillow's
    decode and the copy out of its 4-byte pixels). None where torchvision has no decoder or refuses
    the file (Pillow then decodes it, or names the error)."""
    import warnings

    import torch

    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:  # deprecated since torchvision 0.29 (for TorchCodec); Pillow does it all
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_jpeg(torch.frombuffer(data, dtype=torch.uint8), mode=ImageReadMode.RGB)
    except RuntimeError:  # a variant its decoder lacks, or a truncated file
        return None


def _tensor(im: Any) -> Any:
    """An RGB PIL image as a (3, H, W) uint8 tensor (a view of one copy of its pixels)."""
    import numpy as np
    import torch

    return torch.from_numpy(np.array(im)).permute(2, 0, 1)


def _scaled_box(box: Box, r: int, height: int, width: int) -> Box:
    """`box` of a picture mapped onto the picture decoded at 1/r (height x width pixels)."""
    top, left, h, w = box
    t0, l0 = min(round(top / r), height - 1), min(round(left / r), width - 1)
    t1, l1 = min(max(round((top + h) / r), t0 + 1), height), min(max(round((left + w) / r), l0 + 1), width)
    return t0, l0, t1 - t0, l1 - l0
