"""ObjectsDataset (the demo's data): determinism, split separation, and that every label is the drawn kind."""

import numpy as np
import pytest

from openjepa.data import ObjectsDataset
from openjepa.data.objects import OBJECT_KINDS, object_mask
from openjepa.data.shapes import _SHAPE_COLOURS

from .test_data_shapes import _components


def _objects(img: np.ndarray) -> list[np.ndarray]:
    """Boolean masks (cropped to their bounding box) of the one-colour connected objects in an image."""
    out = []
    for colour in _SHAPE_COLOURS:
        for comp in _components(np.all(img == colour, axis=-1)):
            ys, xs = np.array(comp).T
            crop = np.zeros((ys.max() - ys.min() + 1, xs.max() - xs.min() + 1), dtype=bool)
            crop[ys - ys.min(), xs - xs.min()] = True
            out.append(crop)
    return out


def _cropped(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def test_objects__same_seed_same_images_other_seed_or_split_differs():
    a, b = ObjectsDataset(32, seed=1), ObjectsDataset(32, seed=1)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.targets, b.targets)
    assert not np.array_equal(a.images, ObjectsDataset(32, seed=2).images)
    assert not np.array_equal(a.images, ObjectsDataset(32, seed=1, split="test").images)


def test_objects__each_image_shows_its_count_of_objects_all_of_its_kind():
    ds = ObjectsDataset(120, seed=0)
    assert set(ds.targets.tolist()) == set(range(len(OBJECT_KINDS)))  # every kind is drawn
    shapes = {k: [_cropped(object_mask(k, s)) for s in range(5, 17)] for k in range(len(OBJECT_KINDS))}
    for i in range(len(ds)):
        found = _objects(ds.images[i])
        assert len(found) == ds.counts[i], i
        kind = int(ds.targets[i])
        for obj in found:  # the drawn pixels are exactly the label's mask at some size, never another kind's
            assert any(m.shape == obj.shape and np.array_equal(m, obj) for m in shapes[kind]), (i, OBJECT_KINDS[kind])


def test_objects__kinds_differ_at_every_drawn_size():
    for s in range(6, 13):
        masks = [object_mask(k, s) for k in range(len(OBJECT_KINDS))]
        assert all(not np.array_equal(masks[a], masks[b]) for a in range(len(masks)) for b in range(a))
        assert object_mask(OBJECT_KINDS.index("ring"), s)[s // 2, s // 2] == 0  # the ring keeps its hole


def test_objects__count_labels_and_bad_arguments():
    ds = ObjectsDataset(16, label_key="count")
    assert np.array_equal(ds.targets, ds.counts - 1) and ds.num_classes == 4
    img, label = ds[3]
    assert img.size == (32, 32) and label == ds.targets[3]
    for kwargs, msg in (
        ({"n": 0}, "n >= 1"),
        ({"n": 4, "img_size": 8}, "img_size >= 16"),
        ({"n": 4, "label_key": "x"}, "label_key"),
    ):
        with pytest.raises(ValueError, match=msg):
            ObjectsDataset(**kwargs)
