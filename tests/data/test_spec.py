"""The dataset-spec grammar (parse_data_spec), building datasets from parsed specs, and tar shards
read by index for evaluation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import Subset

from openjepa.config import load_config, recipe_path
from openjepa.data import DataSpec, build_dataset, build_train_dataset, parse_data_spec
from openjepa.data.build import _BUILDERS
from openjepa.data.shard_samples import ShardSamples
from openjepa.data.shards import ShardDataset, write_shards
from openjepa.data.spec import DEFAULT_SHAPES_N, KINDS, image_inputs


@pytest.mark.parametrize(
    "text, kind, path, count",
    [
        ("x.npz", "npz", "x.npz", None),
        ("Data/X.NPZ", "npz", "Data/X.NPZ", None),  # the suffix in any case; the path as written
        ("npz:Some/File", "npz", "Some/File", None),
        ("NPZ:a/B.bin", "npz", "a/B.bin", None),  # prefixes in any case
        ("folder:/Data/Images", "folder", "/Data/Images", None),
        ("Folder:rel/dir", "folder", "rel/dir", None),
        ("shards:/d/s-{000000..000003}.tar", "shards", "/d/s-{000000..000003}.tar", None),
        ("SHARDS:/d/A::/d/B", "shards", "/d/A::/d/B", None),
        ("shapes", "shapes", None, DEFAULT_SHAPES_N),
        ("DEMO", "shapes", None, DEFAULT_SHAPES_N),
        ("objects:12", "objects", None, 12),
        ("shapes:40", "shapes", None, 40),
        (" Shapes: 7 ", "shapes", None, 7),
        ("C:/data/x.npz", "npz", "C:/data/x.npz", None),  # an unknown prefix is part of a path
    ],
)
def test_parse__each_form_gives_its_kind_and_keeps_the_text(text, kind, path, count):
    spec = parse_data_spec(text)
    assert (spec.kind, spec.path, spec.count) == (kind, path, count)
    assert spec.text == text.strip() and str(spec) == text.strip()


def test_parse__an_existing_directory_is_a_folder_and_a_missing_one_is_refused(tmp_path):
    spec = parse_data_spec(str(tmp_path))
    assert spec == DataSpec("folder", str(tmp_path), path=str(tmp_path))
    assert spec.image_root == str(tmp_path) and spec.stat_path == str(tmp_path) and not spec.streamed
    with pytest.raises(ValueError, match="bad dataset spec"):
        parse_data_spec(str(tmp_path / "missing"))


@pytest.mark.parametrize(
    "text",
    ["", "   ", "imagenet", "shapes:abc", "shapes:0", "shapes:-3", "npz:", "folder: ", "shards:", "/no/such/dir"],
)
def test_parse__bad_specs_name_every_accepted_form(text):
    with pytest.raises(ValueError) as err:
        parse_data_spec(text)
    msg = str(err.value)
    assert msg.startswith("bad dataset spec") and "\n" not in msg
    for form in ("npz:PATH", "folder:PATH", "shards:PATTERN", "shapes:N", "objects:N", "demo"):
        assert form in msg


def test_spec__is_frozen_and_says_what_it_reads():
    spec = parse_data_spec("shapes:10")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.count = 3  # type: ignore[misc]
    assert spec.image_root is None and spec.stat_path is None and not spec.streamed
    shards = parse_data_spec("shards:/x/*.tar")
    assert shards.streamed and shards.image_root is None and shards.stat_path is None
    npz = parse_data_spec("npz:/x/y.npz")
    assert npz.image_root is None and npz.stat_path == "/x/y.npz"


def test_build__every_kind_has_a_builder():
    assert set(_BUILDERS) == set(KINDS)


def test_build__a_parsed_spec_and_its_text_give_the_same_dataset(tmp_path):
    a = build_dataset(parse_data_spec("Shapes:12"), split="test", img_size=8)
    b = build_dataset("shapes:12", split="test", img_size=8)
    assert len(a) == len(b) == 3 and np.array_equal(a.images, b.images)


def test_build__options_that_do_not_apply_are_refused(tmp_path):
    (tmp_path / "c").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "c" / "a.png")
    with pytest.raises(ValueError, match="label key 'dist' does not apply"):
        build_dataset(str(tmp_path), label_key="dist")
    with pytest.raises(ValueError, match="subset file lists files of an image folder"):
        build_dataset("shapes:4", subset_file=tmp_path / "list.txt")


def _write_split_shards(root, n_train=7, n_val=3, size=8):
    rng = np.random.default_rng(0)
    out = {}
    for split, n in (("train", n_train), ("val", n_val)):
        images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
        labels = rng.integers(0, 5, size=n)
        write_shards(images, labels, root / split, per_shard=3, fmt="png")
        out[split] = (images, labels)
    return out


def test_shards__folder_form_reads_each_split_by_index(tmp_path):
    written = _write_split_shards(tmp_path / "sh")
    for split, name in (("train", "train"), ("test", "val"), ("val", "val")):
        ds = build_dataset(f"shards:{tmp_path / 'sh'}", split=split)
        images, labels = written[name]
        assert isinstance(ds, ShardSamples) and len(ds) == len(images)
        for i in reversed(range(len(ds))):  # any order: each item is read at its own offset
            img, label = ds[i]
            assert label == labels[i] and np.array_equal(np.asarray(img), images[i])
    sub = Subset(build_dataset(f"shards:{tmp_path / 'sh'}"), [5, 1])
    assert [y for _, y in sub] == [written["train"][1][5], written["train"][1][1]]


def test_shards__a_pattern_serves_every_split_and_a_folder_without_tars_is_refused(tmp_path):
    written = _write_split_shards(tmp_path / "sh")
    spec = f"SHARDS:{tmp_path / 'sh' / 'train'}/shard-{{000000..000002}}.tar"
    train, test = build_dataset(spec, "train"), build_dataset(spec, "test")
    assert len(train) == len(test) == 7 and test[6][1] == written["train"][1][6]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .tar shards"):
        build_dataset(f"shards:{tmp_path / 'empty'}")


def test_build_train_dataset__streams_the_train_shards_of_a_shards_folder(tmp_path):
    _write_split_shards(tmp_path / "sh")
    cfg = load_config(recipe_path("demo"), [f"data.dataset=Shards:{tmp_path / 'sh'}"])
    ds = build_train_dataset(cfg)
    assert isinstance(ds, ShardDataset) and len(ds) == 7
    assert all("/train/" in u for u in ds.urls)


def test_image_inputs__folders_and_files_pass_specs_without_files_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    photo = tmp_path / "p.jpg"
    assert image_inputs([f"folder:{tmp_path}", str(photo), "missing.png"]) == [str(tmp_path), str(photo), "missing.png"]
    for spec, kind in (
        ("x.npz", "npz"),
        ("shards:/x/*.tar", "shards"),
        ("shapes:10", "shapes"),
        ("demo", "shapes"),
        ("objects:4", "objects"),
    ):
        with pytest.raises(ValueError, match=f"cannot index .*a {kind} dataset holds no image files"):
            image_inputs([spec])
    with pytest.raises(ValueError, match="bad dataset spec"):
        image_inputs(["shapes:zero"])
    (tmp_path / "demo").mkdir()
    assert image_inputs(["demo"]) == ["demo"]  # an existing folder named like the demo data stays a folder
