"""Image transforms for I-JEPA pretraining and evaluation (reference ``make_transforms``)."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from PIL import Image, ImageFilter
from torchvision import transforms as T

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RandomGaussianBlurPIL",
    "make_pretrain_transforms",
    "make_eval_transforms",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RandomGaussianBlurPIL:
    """Blur a PIL image with probability ``p`` and radius drawn from U(radius_min, radius_max)."""

    def __init__(self, p: float = 0.5, radius_min: float = 0.1, radius_max: float = 2.0) -> None:
        """Store the blur probability and radius range."""
        self.p = float(p)
        self.radius_min = float(radius_min)
        self.radius_max = float(radius_max)

    def __call__(self, img: Image.Image) -> Image.Image:
        """Return the (possibly) blurred image."""
        # torch's RNG rather than `random`, so that seeding torch alone makes the pipeline repeatable
        if torch.rand(()).item() >= self.p:
            return img
        radius = self.radius_min + torch.rand(()).item() * (self.radius_max - self.radius_min)
        return img.filter(ImageFilter.GaussianBlur(radius=radius))

    def __repr__(self) -> str:
        """Readable form for printed pipelines."""
        return f"{type(self).__name__}(p={self.p}, radius_min={self.radius_min}, radius_max={self.radius_max})"


def make_pretrain_transforms(
    crop_size: int,
    crop_scale: Sequence[float] = (0.3, 1.0),
    horizontal_flip: bool = False,
    color_distortion: bool = False,
    gaussian_blur: bool = False,
    color_jitter_strength: float = 1.0,
) -> Callable[[Image.Image], torch.Tensor]:
    """Build the reference I-JEPA pretraining pipeline: PIL image -> normalised (3, crop, crop) tensor."""
    ops: list = [T.RandomResizedCrop(int(crop_size), scale=tuple(float(s) for s in crop_scale))]
    if horizontal_flip:
        ops.append(T.RandomHorizontalFlip())
    if color_distortion:
        s = float(color_jitter_strength)
        ops.append(T.RandomApply([T.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8))
        ops.append(T.RandomGrayscale(p=0.2))
    if gaussian_blur:
        ops.append(RandomGaussianBlurPIL(p=0.5, radius_min=0.1, radius_max=2.0))
    ops += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(ops)


def make_eval_transforms(
    img_size: int | Sequence[int], resize_ratio: float = 1.0
) -> Callable[[Image.Image], torch.Tensor]:
    """Build the evaluation pipeline: bicubic resize, centre crop to `img_size` (side or (h, w)), normalise.

    The shorter side is resized to `resize_ratio` times the crop's longer side (for a square crop:
    resize_ratio * img_size), so the crop never needs padding.
    """
    h, w = (int(img_size[0]), int(img_size[1])) if isinstance(img_size, Sequence) else (int(img_size),) * 2
    if min(h, w) < 1 or resize_ratio < 1.0:
        # a resize smaller than the crop would make CenterCrop pad with black borders
        raise ValueError(
            f"make_eval_transforms needs img_size >= 1 and resize_ratio >= 1.0, "
            f"got img_size={img_size}, resize_ratio={resize_ratio}; resize_ratio is "
            f"resize/crop (e.g. 256/224), the inverse of timm's crop_pct"
        )
    resize_to = round(max(h, w) * resize_ratio)
    return T.Compose(
        [
            T.Resize(resize_to, interpolation=T.InterpolationMode.BICUBIC, antialias=True),
            T.CenterCrop(h if h == w else (h, w)),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
