"""ImageFolderDataset: layout, subset file, unreadable files and error messages."""

import logging

import numpy as np
import pytest
from PIL import Image

from openjepa.data import ImageFolderDataset


def _img(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 4), (value, value, value)).save(path)


def _tree(root, split="train"):
    base = root / split if split else root
    _img(base / "n01" / "n01_1.JPEG", 10)
    _img(base / "n01" / "n01_2.JPEG", 20)
    _img(base / "n02" / "n02_1.png", 30)
    _img(base / "n02" / "n02_2.png", 40)
    return base


def test_imagefolder__reads_split_subfolder_with_class_labels(tmp_path):
    _tree(tmp_path)
    ds = ImageFolderDataset(tmp_path, split="train")
    assert ds.classes == ["n01", "n02"] and ds.num_classes == 2 and len(ds) == 4
    assert isinstance(ds.targets, np.ndarray) and ds.targets.tolist() == [0, 0, 1, 1]
    img, y = ds[2]
    assert img.mode == "RGB" and img.size == (6, 4) and y == 1 and np.asarray(img)[0, 0, 0] == 30


def test_imagefolder__without_split_folder_uses_root(tmp_path):
    _tree(tmp_path, split=None)
    assert len(ImageFolderDataset(tmp_path, split="train")) == 4
    assert len(ImageFolderDataset(tmp_path, split=None)) == 4


def test_imagefolder__test_split_falls_back_to_val_folder(tmp_path):
    _tree(tmp_path, split="train")
    _img(tmp_path / "val" / "n01" / "v.JPEG", 99)
    ds = ImageFolderDataset(tmp_path, split="test")
    assert len(ds) == 1 and np.asarray(ds[0][0])[0, 0, 0] == 99


def test_imagefolder__missing_split_among_split_folders_is_an_error(tmp_path):
    _tree(tmp_path, split="train")
    with pytest.raises(ValueError, match="train"):
        ImageFolderDataset(tmp_path, split="test")


def test_imagefolder__subset_file_keeps_only_listed_files(tmp_path):
    _tree(tmp_path)
    subset = tmp_path / "subset.txt"
    subset.write_text("n01_2.JPEG\n\nn02/n02_1.png\nnot_there.JPEG\n")
    ds = ImageFolderDataset(tmp_path, subset_file=subset)
    assert sorted(p.split("/")[-1] for p, _ in ds.samples) == ["n01_2.JPEG", "n02_1.png"]
    assert ds.targets.tolist() == [0, 1]


def test_imagefolder__corrupt_file_is_skipped_and_counted(tmp_path, caplog):
    base = _tree(tmp_path)
    bad = base / "n01" / "n01_2.JPEG"
    bad.write_bytes(b"this is not a jpeg" * 10)
    ds = ImageFolderDataset(tmp_path)
    with caplog.at_level(logging.WARNING, logger="openjepa.data"):
        img, y = ds[1]  # the corrupt file: the next valid sample (index 2) comes back
        assert y == 1 and np.asarray(img)[0, 0, 0] == 30
        # a full pass: the bad position yields its successor, and no second warning is logged
        assert [y for _, y in ds] == [0, 1, 1, 1]
    warnings = [r for r in caplog.records if r.name == "openjepa.data"]
    assert len(warnings) == 1 and str(bad) in warnings[0].getMessage()
    assert ds.num_skipped == 1


def test_imagefolder__truncated_last_file_wraps_to_first(tmp_path):
    base = _tree(tmp_path)
    last = base / "n02" / "n02_2.png"
    last.write_bytes(last.read_bytes()[:20])
    ds = ImageFolderDataset(tmp_path)
    img, y = ds[3]
    assert y == 0 and np.asarray(img)[0, 0, 0] == 10 and ds.num_skipped == 1


def test_imagefolder__all_files_unreadable_raises_runtime_error(tmp_path):
    base = tmp_path / "train" / "c"
    base.mkdir(parents=True)
    for i in range(2):
        (base / f"{i}.jpg").write_bytes(b"garbage")
    ds = ImageFolderDataset(tmp_path)
    with pytest.raises(RuntimeError, match="unreadable"):
        ds[0]
    assert ds.num_skipped == 2


def test_imagefolder__missing_root_message_names_the_fix(tmp_path):
    missing = tmp_path / "no_such_dir"
    with pytest.raises(FileNotFoundError) as err:
        ImageFolderDataset(missing)
    msg = str(err.value)
    assert str(missing) in msg and "data.root_path" in msg and "--data PATH" in msg


def test_imagefolder__empty_folder_names_folder_and_extensions(tmp_path):
    (tmp_path / "train" / "cls").mkdir(parents=True)
    (tmp_path / "train" / "cls" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError) as err:
        ImageFolderDataset(tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "train") in msg and ".jpeg" in msg and ".png" in msg


def test_imagefolder__folder_without_class_subfolders_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="class sub-folders"):
        ImageFolderDataset(tmp_path, split=None)
