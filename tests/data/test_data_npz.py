"""NpzImageDataset on small .npz files written to tmp_path."""

import numpy as np
import pytest
import torch
from PIL import Image

from openjepa.data import NpzImageDataset, make_eval_transforms


def _write(path, n_train=6, n_test=3, hw=(5, 7), c=3, extra=None, drop=()):
    rng = np.random.default_rng(0)
    shape = lambda n: (n, *hw, c) if c else (n, *hw)  # noqa: E731
    d = {
        "x_train": rng.integers(0, 256, shape(n_train), dtype=np.uint8),
        "y_train": (np.arange(n_train) % 3).astype(np.uint8),
        "x_test": rng.integers(0, 256, shape(n_test), dtype=np.uint8),
        "y_test": np.array([2, 0, 1][:n_test] * (n_test // 3 + 1), dtype=np.uint8)[:n_test],
        "class_names": np.array(["cat", "dog", "emu"]),
    }
    d.update(extra or {})
    for k in drop:
        d.pop(k)
    np.savez_compressed(path, **d)
    return d


def test_npz__round_trip_pixels_labels_and_class_names(tmp_path):
    p = tmp_path / "tiny.npz"
    d = _write(p)
    ds = NpzImageDataset(p, split="train")
    assert len(ds) == 6 and ds.classes == ["cat", "dog", "emu"] and ds.num_classes == 3
    assert isinstance(ds.targets, np.ndarray) and ds.targets.tolist() == d["y_train"].tolist()
    for i in range(len(ds)):
        img, y = ds[i]
        assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (7, 5)
        assert np.array_equal(np.asarray(img), d["x_train"][i])
        assert type(y) is int and y == int(d["y_train"][i])
    test = NpzImageDataset(p, split="test")
    assert len(test) == 3 and np.array_equal(np.asarray(test[0][0]), d["x_test"][0])
    assert test.targets.tolist() == d["y_test"].tolist()


def test_npz__grayscale_channel_is_expanded_to_rgb(tmp_path):
    p = tmp_path / "gray.npz"
    d = _write(p, c=1)
    img, _ = NpzImageDataset(p)[2]
    arr = np.asarray(img)
    assert img.mode == "RGB" and arr.shape == (5, 7, 3)
    for ch in range(3):
        assert np.array_equal(arr[..., ch], d["x_train"][2, ..., 0])


def test_npz__transform_is_applied(tmp_path):
    p = tmp_path / "tiny.npz"
    _write(p, hw=(8, 8))
    x, y = NpzImageDataset(p, transform=make_eval_transforms(8))[0]
    assert isinstance(x, torch.Tensor) and x.shape == (3, 8, 8) and y == 0


def test_npz__label_key_selects_extra_label_array_and_names(tmp_path):
    p = tmp_path / "dist.npz"
    extra = {
        "y_train_dist": np.array([5, 4, 3, 2, 1, 0], dtype=np.uint8),
        "y_test_dist": np.array([1, 1, 0], dtype=np.uint8),
        "dist_class_names": np.array([f"d{i}" for i in range(6)]),
        "n_objects_train": np.array([3, 4, 5, 6, 7, 8], dtype=np.int64),
    }
    _write(p, extra=extra)
    ds = NpzImageDataset(p, label_key="dist")
    assert ds.targets.tolist() == [5, 4, 3, 2, 1, 0] and ds[0][1] == 5
    assert ds.classes == [f"d{i}" for i in range(6)] and ds.num_classes == 6
    assert NpzImageDataset(p, split="test", label_key="dist").targets.tolist() == [1, 1, 0]
    # arrays named <key>_<split> work too; classes fall back to 0..max
    raw = NpzImageDataset(p, label_key="n_objects")
    assert raw[5][1] == 8 and raw.num_classes == 9


def test_npz__indices_select_a_subset_in_order(tmp_path):
    p = tmp_path / "tiny.npz"
    d = _write(p)
    ds = NpzImageDataset(p, indices=[4, 1])
    assert len(ds) == 2 and ds.targets.tolist() == [d["y_train"][4], d["y_train"][1]]
    assert np.array_equal(np.asarray(ds[1][0]), d["x_train"][1])


def test_npz__missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        NpzImageDataset(missing)


def test_npz__missing_keys_lists_present_and_expected(tmp_path):
    p = tmp_path / "bad.npz"
    _write(p, drop=("x_test", "y_test"))
    with pytest.raises(ValueError) as err:
        NpzImageDataset(p, split="test")
    msg = str(err.value)
    assert "x_test" in msg and "y_test" in msg and "x_train" in msg and "keys present" in msg


def test_npz__unknown_label_key_lists_keys(tmp_path):
    p = tmp_path / "tiny.npz"
    _write(p)
    with pytest.raises(ValueError, match="y_train_colour"):
        NpzImageDataset(p, label_key="colour")
