"""ShapesDataset: determinism, split separation, label correctness and speed."""

import time
from collections import deque

import numpy as np
import pytest
from PIL import Image

from openjepa.data import ShapesDataset


def _components(mask):
    """4-connected components of a boolean mask, as lists of (y, x)."""
    seen = np.zeros_like(mask, dtype=bool)
    comps = []
    h, w = mask.shape
    for sy, sx in zip(*np.nonzero(mask)):
        if seen[sy, sx]:
            continue
        seen[sy, sx] = True
        comp, todo = [], deque([(sy, sx)])
        while todo:
            y, x = todo.popleft()
            comp.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    todo.append((ny, nx))
        comps.append(comp)
    return comps


def test_shapes__same_seed_gives_identical_pixels_and_labels():
    a, b = ShapesDataset(64, seed=3), ShapesDataset(64, seed=3)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.targets, b.targets)
    assert np.array_equal(np.asarray(a[5][0]), np.asarray(b[5][0]))


def test_shapes__different_seed_or_split_gives_different_images():
    train = ShapesDataset(64, seed=3)
    assert not np.array_equal(train.images, ShapesDataset(64, seed=4).images)
    test = ShapesDataset(64, seed=3, split="test")
    # disjoint streams: no test image equals any train image
    flat_train = {im.tobytes() for im in train.images}
    assert not any(im.tobytes() in flat_train for im in test.images)


def test_shapes__count_label_equals_number_of_drawn_shapes():
    ds = ShapesDataset(200, img_size=32, seed=1)
    assert ds.classes == ["1", "2", "3", "4"] and ds.num_classes == 4
    assert np.array_equal(ds.targets, ds.n_shapes - 1)
    assert set(np.unique(ds.n_shapes).tolist()) == {1, 2, 3, 4}
    for i in range(len(ds)):
        img = ds.images[i].astype(int)
        # shapes are saturated colours on a near-grey background; each shape is one blob
        saturated = img.max(-1) - img.min(-1) > 100
        blobs = _components(saturated)
        assert len(blobs) == ds.n_shapes[i], i
        assert (ds.boxes[i, :, 0] >= 0).sum() == ds.n_shapes[i]


def test_shapes__quadrant_label_is_quadrant_of_largest_shape():
    ds = ShapesDataset(150, img_size=32, seed=2, label_key="quadrant")
    assert ds.classes == ["top-left", "top-right", "bottom-left", "bottom-right"]
    assert np.array_equal(ds.targets, ds.positions)
    for i in range(len(ds)):
        img = ds.images[i].astype(int)
        blobs = _components(img.max(-1) - img.min(-1) > 100)
        biggest = max(len(b) for b in blobs)
        candidates = set()
        for b in blobs:
            if len(b) == biggest:
                ys, xs = np.array(b).T
                bottom = 2 * ys.sum() >= 31 * len(b)
                right = 2 * xs.sum() >= 31 * len(b)
                candidates.add(2 * int(bottom) + int(right))
        assert ds[i][1] in candidates, i


def test_shapes__returns_pil_rgb_and_applies_transform():
    ds = ShapesDataset(4, img_size=16, transform=lambda im: np.asarray(im).shape)
    assert ds[0][0] == (16, 16, 3)
    img, y = ShapesDataset(4, img_size=16)[1]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and 0 <= y < 4


def test_shapes__5000_images_generate_in_under_3_seconds():
    t0 = time.perf_counter()
    ds = ShapesDataset(5000, img_size=32)
    assert time.perf_counter() - t0 < 3.0
    assert ds.images.shape == (5000, 32, 32, 3) and ds.images.dtype == np.uint8
    # balanced enough to train on: each count class gets a fair share
    assert np.bincount(ds.targets, minlength=4).min() > 1000


def test_shapes__bad_label_key_is_rejected():
    with pytest.raises(ValueError, match="quadrant"):
        ShapesDataset(4, label_key="colour")
