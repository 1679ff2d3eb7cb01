"""openjepa.data."""

from openjepa.data.datasets import (
    IMG_EXTENSIONS,
    ImageFolderDataset,
    NpzImageDataset,
    ShapesDataset,
    build_dataset,
)
from openjepa.data.loader import EpochSampler, SkipSampler, make_loader, seed_worker
from openjepa.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    make_eval_transforms,
    make_pretrain_transforms,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMG_EXTENSIONS",
    "EpochSampler",
    "ImageFolderDataset",
    "NpzImageDataset",
    "ShapesDataset",
    "SkipSampler",
    "build_dataset",
    "make_eval_transforms",
    "make_loader",
    "make_pretrain_transforms",
    "seed_worker",
]
