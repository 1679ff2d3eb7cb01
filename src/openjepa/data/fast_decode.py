"""The pretraining augmentation with its crop fused into the decode (`data.fast_decode`).

torchvision's RandomResizedCrop decodes the whole picture, then crops and resizes it with Pillow.
`FusedCrop` draws the same crop box with the same torch RNG calls (`RandomResizedCrop.get_params`
on the picture's header), decodes the file for that box (`images.read_rgb_region`: at a reduced
DCT scale when the crop is downscaled by 2 or more) and resizes the box with torch's antialiased
bilinear uint8 kernel, which gives Pillow's pixels to within a few levels (identical when
upscaling) in about a third of the time. The flip, `ToTensor` and `Normalize` then run on the tensor
exactly as the reference runs them on the PIL crop; any other step (colour jitter, blur) gets a
PIL image, as in the reference. Seeded runs therefore draw the same boxes and flips as the plain
pipeline; the pixels differ only by the resampling (tests/data/test_fast_decode.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from .images import Box, read_rgb_region

__all__ = ["FusedCrop", "resized_crop"]


def resized_crop(pixels: torch.Tensor, box: Box, size: tuple[int, int]) -> torch.Tensor:
    """(C, H, W) uint8 pixels (C in 1, 3) cropped to `box` and resized to `size`: (3, h, w) uint8.

    Bilinear with antialiasing when downscaling, as RandomResizedCrop does with Pillow.
    """
    top, left, h, w = box
    region = pixels[:, top : top + h, left : left + w].unsqueeze(0)  # (1, C, h, w) view, no copy
    out = F.interpolate(region, size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    return out if out.shape[0] == 3 else out.expand(3, *size).contiguous()


def _array_pixels(arr: np.ndarray) -> torch.Tensor:
    """An (H, W, C) uint8 array (C in 1, 3, 4) as (C', H, W) pixels without copying; alpha is dropped
    as PIL's RGBA -> RGB conversion drops it (datasets._array_to_rgb)."""
    pixels = torch.from_numpy(arr).permute(2, 0, 1)
    return pixels[:3] if pixels.shape[0] == 4 else pixels


class FusedCrop:
    """A torchvision pretraining Compose (a bilinear RandomResizedCrop first) applied to a file or an array.

    `crop(source)` decodes `source` (an image file's path or an (H, W, C) uint8 array) for the crop
    and returns the (3, h, w) uint8 crop; `finish(pixels)` runs the rest of the pipeline on it.
    """

    def __init__(self, crop: T.RandomResizedCrop, rest: Sequence[Callable[[Any], Any]]) -> None:
        """Keep the crop step and the steps after it."""
        self.op, self.rest = crop, list(rest)
        self.size: tuple[int, int] = (int(crop.size[0]), int(crop.size[1]))

    @classmethod
    def of(cls, transform: Any) -> FusedCrop | None:
        """The fused form of `transform`, or None where it does not start with a bilinear RandomResizedCrop."""
        ops = list(getattr(transform, "transforms", ()))
        if not ops or type(ops[0]) is not T.RandomResizedCrop or ops[0].interpolation != InterpolationMode.BILINEAR:
            return None
        return cls(ops[0], ops[1:])

    def _plan(self, img: Any) -> Box:
        """The crop box of RandomResizedCrop for `img` (PIL image or tensor): the same RNG draws."""
        top, left, h, w = self.op.get_params(img, list(self.op.scale), list(self.op.ratio))
        return int(top), int(left), int(h), int(w)

    def crop(self, source: str | os.PathLike | np.ndarray) -> torch.Tensor:
        """The random resized crop of an image file or an (H, W, C) uint8 array: (3, h, w) uint8."""
        if isinstance(source, np.ndarray):
            pixels = _array_pixels(source)
            return resized_crop(pixels, self._plan(pixels), self.size)
        pixels, box = read_rgb_region(source, self._plan, self.size)
        return resized_crop(pixels, box, self.size)

    def finish(self, pixels: torch.Tensor) -> Any:
        """The pipeline's steps after the crop, on the (3, h, w) uint8 crop: the sample the reference returns."""
        img: Any = pixels
        owned = False  # whether `img` is a float tensor made here, which may be changed in place
        for op in self.rest:
            if isinstance(img, torch.Tensor) and img.dtype == torch.uint8:
                if isinstance(op, T.ToTensor):
                    img = img.to(torch.get_default_dtype()).div_(255)  # what ToTensor does to the PIL crop's bytes
                    owned = True
                    continue
                if not isinstance(op, T.RandomHorizontalFlip):  # PIL-only steps see the PIL crop, as in the reference
                    img = Image.fromarray(img.permute(1, 2, 0).numpy())
            if owned and isinstance(op, T.Normalize):
                img = TF.normalize(img, op.mean, op.std, inplace=True)  # the same arithmetic, without its copy
                continue
            img = op(img)
            owned = False
        return img

    def __call__(self, source: str | os.PathLike | np.ndarray) -> Any:
        """The whole pipeline on one image file or array."""
        return self.finish(self.crop(source))

    def __repr__(self) -> str:
        """Readable form for printed pipelines."""
        return f"{type(self).__name__}({self.op!r}, then {self.rest!r})"
