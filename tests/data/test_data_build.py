"""build_dataset: parsing of command-line dataset specs."""

import numpy as np
import pytest
from PIL import Image

from openjepa.data import ImageFolderDataset, NpzImageDataset, ObjectsDataset, ShapesDataset, build_dataset


@pytest.fixture()
def npz_file(tmp_path):
    p = tmp_path / "d.npz"
    x = np.zeros((4, 3, 3, 3), np.uint8)
    np.savez(p, x_train=x, y_train=np.arange(4), x_test=x[:2], y_test=np.arange(2), class_names=np.array(list("abcd")))
    return p


@pytest.fixture()
def folder(tmp_path):
    d = tmp_path / "imgs" / "train" / "c0"
    d.mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(d / "a.png")
    return tmp_path / "imgs"


def test_build_dataset__npz_path_and_npz_prefix(npz_file):
    ds = build_dataset(str(npz_file))
    assert isinstance(ds, NpzImageDataset) and len(ds) == 4
    ds = build_dataset(f"npz:{npz_file}", split="test", label_key=None)
    assert isinstance(ds, NpzImageDataset) and len(ds) == 2


def test_build_dataset__missing_npz_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        build_dataset(str(tmp_path / "absent.npz"))


def test_build_dataset__directory_and_folder_prefix(folder):
    assert isinstance(build_dataset(str(folder)), ImageFolderDataset)
    ds = build_dataset(f"folder:{folder}", subset_file=None)
    assert isinstance(ds, ImageFolderDataset) and len(ds) == 1


def test_build_dataset__shapes_forms_and_test_split_is_quarter():
    ds = build_dataset("shapes:40", img_size=16)
    assert isinstance(ds, ShapesDataset) and len(ds) == 40 and ds.img_size == 16
    test = build_dataset("shapes:40", split="test", img_size=16)
    assert len(test) == 10 and test.split == "test"
    assert len(build_dataset("shapes", split="test", img_size=8)) == 5000 // 4  # default N=5000
    assert isinstance(build_dataset("demo", split="test", img_size=8), ShapesDataset)
    objects = build_dataset("objects", split="test", img_size=16)
    assert isinstance(objects, ObjectsDataset) and len(objects) == 5000 // 4 and objects.classes[0] == "square"
    objects = build_dataset("objects:40", img_size=16, label_key="count")
    assert isinstance(objects, ObjectsDataset) and len(objects) == 40 and objects.classes == ["1", "2", "3", "4"]


@pytest.mark.parametrize("spec", ["imagenet", "shapes:abc", "shapes:0", "objects:x", "", "/no/such/dir"])
def test_build_dataset__unknown_spec_lists_accepted_forms(spec):
    with pytest.raises(ValueError) as err:
        build_dataset(spec)
    msg = str(err.value)
    assert "npz:PATH" in msg and "folder:PATH" in msg and "shapes:N" in msg
