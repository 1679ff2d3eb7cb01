"""Streaming tar shards: spec expansion, the writer, each sample once per epoch across ranks and
workers, deterministic shuffles, and mid-epoch resume that skips consumed samples."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch

from openjepa.data import make_loader
from openjepa.data.shards import (
    INDEX_NAME,
    ShardDataset,
    buffer_shuffle_order,
    count_samples,
    expand_urls,
    write_shards,
)

from .conftest import write_test_shards

N, PER_SHARD, BATCH = 48, 12, 4


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    write_test_shards(folder, N, PER_SHARD)
    return folder


def _labels(collated):
    return collated[1].tolist()


def _collate(batch):
    return torch.stack([torch.as_tensor(np.array(img)) for img, _ in batch]), torch.tensor([y for _, y in batch])


def _epoch(folder, rank=0, world=1, workers=0, epoch=0, skip=0, buffer=10):
    ds = ShardDataset(f"shards:{folder}/shard-{{000000..000003}}.tar", seed=7, shuffle_buffer=buffer)
    ds.set_epoch(epoch)
    loader = make_loader(
        ds, BATCH, _collate, num_workers=workers, seed=7, epoch=epoch, rank=rank, world_size=world, skip_batches=skip
    )
    return [(imgs, _labels((imgs, y))) for imgs, y in loader]


def test_expand_urls__braces_globs_and_lists(shards):
    names = [f"{shards}/shard-{i:06d}.tar" for i in range(4)]
    assert expand_urls(f"shards:{shards}/shard-{{000000..000003}}.tar") == names
    assert expand_urls(f"{shards}/shard-{{000000,000002}}.tar") == [names[0], names[2]]
    assert expand_urls(f"{shards}/shard-*.tar") == names
    assert expand_urls(f"{shards}/shard-000003.tar::{shards}/shard-00000[01].tar") == [names[3], *names[:2]]
    with pytest.raises(FileNotFoundError, match="not found"):
        expand_urls(f"shards:{shards}/shard-{{000000..000009}}.tar")


def test_write_shards__webdataset_layout_and_index(shards):
    with tarfile.open(shards / "shard-000001.tar") as tf:
        names = tf.getnames()
        assert names[:4] == ["00000012.png", "00000012.cls", "00000013.png", "00000013.cls"]
        assert tf.extractfile("00000013.cls").read() == b"13"
    assert [count_samples(shards / f"shard-{i:06d}.tar") for i in range(4)] == [PER_SHARD] * 4
    index = json.loads((shards / INDEX_NAME).read_text())
    assert index["shard-000002.tar"]["samples"] == PER_SHARD
    ds = ShardDataset(f"shards:{shards}/shard-*.tar")
    assert len(ds) == N
    img, label = ds[30]  # random access (for plots): the image and its label
    assert label == 30 and img.size == (40, 40)


def test_shards_read_without_the_index_and_tolerate_foreign_tars(tmp_path):
    # a shard as other tools write it: "./" prefixes, a directory entry, keys in a sub-folder
    buf = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (8, 8), (255, 0, 0)).save(buf, format="JPEG")
    with tarfile.open(tmp_path / "x-0.tar", "w") as tf:
        d = tarfile.TarInfo("./imgs")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        for key in ("imgs/a", "imgs/b.v2"):
            for ext, data in (("jpeg", buf.getvalue()), ("cls", b"5")):
                info = tarfile.TarInfo(f"./{key}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    ds = ShardDataset(str(tmp_path / "x-0.tar"), shuffle=False)
    assert len(ds) == 2 and (tmp_path / INDEX_NAME).exists()
    assert [y for _, y in ds] == [5, 5]


@pytest.mark.parametrize("workers", [0, 2])
def test_each_sample_once_per_epoch_across_two_ranks(shards, workers):
    seen = {}
    for epoch in (0, 1):
        per_rank = [_epoch(shards, rank, 2, workers, epoch) for rank in (0, 1)]
        assert [len(b) for b in per_rank] == [N // (2 * BATCH)] * 2, "equal batch counts on every rank"
        labels = [y for batches in per_rank for _, ys in batches for y in ys]
        assert sorted(labels) == list(range(N)), f"epoch {epoch}: every sample exactly once"
        seen[epoch] = [ys for batches in per_rank for _, ys in batches]
    assert seen[0] != seen[1], "a new order each epoch"
    again = [_epoch(shards, rank, 2, workers, 1) for rank in (0, 1)]
    assert [ys for batches in again for _, ys in batches] == seen[1], "the order is a function of (seed, epoch)"
    flat = [y for batch in seen[0] for y in batch]
    assert flat != sorted(flat), "shuffled"


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("skip", [1, 2, 5])
def test_resume_skips_consumed_samples_and_continues_identically(shards, workers, skip, monkeypatch):
    full = _epoch(shards, 1, 2, workers, epoch=1)
    opened = []
    original = tarfile.open
    monkeypatch.setattr(tarfile, "open", lambda name, *a, **k: (opened.append(str(name)), original(name, *a, **k))[1])
    resumed = _epoch(shards, 1, 2, 0 if workers == 0 else workers, epoch=1, skip=skip)
    assert [ys for _, ys in resumed] == [ys for _, ys in full[skip:]]
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(resumed, full[skip:])), "same pixels"
    if workers == 0:  # one lane: the shards holding only consumed samples are not even opened
        ds = ShardDataset(f"shards:{shards}/shard-{{000000..000003}}.tar", seed=7, shuffle_buffer=10)
        ds.set_epoch(1)
        ds.configure(rank=1, world_size=2, batch_size=BATCH, skip_batches=skip)
        segments, order = ds.lane_plan(0, 1)
        first_needed = int(order[skip * BATCH :].min())
        starts = np.cumsum([0] + [hi - lo for _, lo, hi in segments])
        unneeded = [ds.urls[s] for (s, _, _), end in zip(segments, starts[1:]) if end <= first_needed]
        assert not set(unneeded) & set(opened)


def test_seeded_augmentations_do_not_depend_on_rank_or_worker(shards):
    from torchvision import transforms as T

    crop = T.Compose([T.RandomResizedCrop(16, scale=(0.3, 1.0)), T.PILToTensor()])
    ds = ShardDataset(f"shards:{shards}/shard-*.tar", crop, seed=3, shuffle=False)
    ds.set_epoch(2)
    a = ds[30][0]  # rank 1 of 2 streams samples 24-47 when unshuffled
    ds.configure(rank=1, world_size=2, batch_size=2)
    b = dict((y, x) for x, y in ds)[30]
    assert torch.equal(a, b)
    ds.set_epoch(3)
    assert not torch.equal(a, ds[30][0])


def test_buffer_shuffle_order__a_permutation_with_bounded_lookahead():
    rng = np.random.default_rng(0)
    for n, buf in ((1, 5), (10, 1), (100, 10), (57, 200)):
        order = buffer_shuffle_order(n, buf, np.random.default_rng(n))
        assert sorted(order.tolist()) == list(range(n))
        assert all(src < t + buf for t, src in enumerate(order.tolist()))
    assert buffer_shuffle_order(10, 1, rng).tolist() == list(range(10))
    assert buffer_shuffle_order(0, 3, rng).tolist() == []


def test_write_shards__arrays_tensors_and_bad_input(tmp_path):
    imgs = [np.zeros((8, 8), np.uint8), torch.rand(3, 8, 8), np.ones((8, 8, 3), np.float32)]
    paths = write_shards(imgs, [1, 2, 3], tmp_path, per_shard=2, fmt="png")
    assert [p.name for p in paths] == ["shard-000000.tar", "shard-000001.tar"]
    ds = ShardDataset([str(p) for p in paths], shuffle=False)
    assert [y for _, y in ds] == [1, 2, 3]
    jpeg = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (8, 8), (0, 255, 0)).save(jpeg, format="JPEG")
    (path,) = write_shards([jpeg.getvalue()], [9], tmp_path / "raw", fmt="jpg")
    with tarfile.open(path) as tf:
        assert tf.extractfile("00000000.jpg").read() == jpeg.getvalue(), "encoded bytes are stored unchanged"
    with pytest.raises(TypeError, match="PIL images"):
        write_shards(["not an image"], None, tmp_path / "bad")
