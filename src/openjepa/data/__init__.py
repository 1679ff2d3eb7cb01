"""openjepa.data."""

from openjepa.data.build import build_dataset, build_train_dataset
from openjepa.data.datasets import (
    IMG_EXTENSIONS,
    ImageFolderDataset,
    NpzImageDataset,
)
from openjepa.data.loader import EpochSampler, SkipSampler, make_loader, seed_worker
from openjepa.data.objects import ObjectsDataset
from openjepa.data.shapes import ShapesDataset
from openjepa.data.spec import DataSpec, as_data_spec, parse_data_spec
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
    "DataSpec",
    "EpochSampler",
    "ImageFolderDataset",
    "NpzImageDataset",
    "ObjectsDataset",
    "ShapesDataset",
    "SkipSampler",
    "as_data_spec",
    "build_dataset",
    "build_train_dataset",
    "make_eval_transforms",
    "make_loader",
    "make_pretrain_transforms",
    "parse_data_spec",
    "seed_worker",
]
