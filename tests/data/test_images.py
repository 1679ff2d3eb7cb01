"""The one image input path: every lister sees the same files, every decoder the same pixels."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from openjepa import load_encoder
from openjepa.data import ImageFolderDataset
from openjepa.data.images import decode_rgb, read_rgb, scan_images
from openjepa.data.shards import ShardDataset, write_shards
from openjepa.interop.api import list_images
from openjepa.search import Index

ORIENTATION = 0x0112  # EXIF tag
W, H = 48, 24  # stored size of the EXIF photo; orientation 6 shows it rotated, as (H, W)


def _photo() -> Image.Image:
    """A non-square picture whose left half is red and right half blue (so rotation is visible)."""
    arr = np.zeros((H, W, 3), np.uint8)
    arr[:, : W // 2] = (220, 20, 20)
    arr[:, W // 2 :] = (20, 20, 220)
    return Image.fromarray(arr)


def _rgba() -> Image.Image:
    """32x32 green picture whose top half is fully transparent (holding black colour values)."""
    arr = np.zeros((32, 32, 4), np.uint8)
    arr[..., 1] = 200
    arr[16:, :, 3] = 255
    arr[:16, :, :3] = 0
    return Image.fromarray(arr, "RGBA")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """root/{a,b}/... with an EXIF-rotated JPEG, an RGBA PNG, hidden files and hidden folders."""
    root = tmp_path / "images"
    (root / "a").mkdir(parents=True)
    (root / "b" / "nested").mkdir(parents=True)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    _photo().save(root / "a" / "phone.jpg", quality=95, exif=exif.tobytes())
    _rgba().save(root / "a" / "logo.png")
    _photo().save(root / "b" / "plain.JPEG", quality=90)
    _photo().transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / "b" / "nested" / "deep.png")
    _photo().save(root / "a" / ".hidden.jpg")
    (root / "a" / ".thumbnails").mkdir()
    _photo().save(root / "a" / ".thumbnails" / "t.jpg")
    (root / ".cache").mkdir()  # a hidden folder at the class level: not a class, not listed
    _photo().save(root / ".cache" / "c.jpg")
    (root / "b" / "notes.txt").write_text("not an image")
    return root


def _expected(root: Path) -> list[str]:
    return [str(root / p) for p in ("a/logo.png", "a/phone.jpg", "b/nested/deep.png", "b/plain.JPEG")]


def test_every_lister_gives_the_same_files(folder):
    files, roots = scan_images(folder)
    assert files == _expected(folder) and roots == [str(folder)]
    assert [str(p) for p in list_images(folder)] == files
    ds = ImageFolderDataset(folder, split=None)
    assert [p for p, _ in ds.samples] == files
    assert ds.classes == ["a", "b"] and ds.targets.tolist() == [0, 0, 1, 1]


def test_exif_orientation_is_applied(folder):
    img = read_rgb(folder / "a" / "phone.jpg")
    assert img.mode == "RGB" and img.size == (H, W)  # rotated: width and height swap
    arr = np.asarray(img).astype(int)
    # orientation 6 = rotate 90 degrees clockwise for display: the red left half ends up on top
    assert arr[2, H // 2, 0] > 150 and arr[2, H // 2, 2] < 80
    assert arr[-3, H // 2, 2] > 150 and arr[-3, H // 2, 0] < 80
    with Image.open(folder / "a" / "phone.jpg") as raw:
        assert raw.size == (W, H)  # the file itself stores the unrotated pixels


def test_transparency_is_composited_on_white(folder):
    arr = np.asarray(read_rgb(folder / "a" / "logo.png"))
    assert arr.shape == (32, 32, 3)
    assert (arr[:16] == 255).all()  # transparent (black underneath) -> white
    assert (arr[16:] == (0, 200, 0)).all()  # opaque pixels keep their colour


def test_every_decoder_gives_the_same_pixels(folder, tmp_path):
    paths = _expected(folder)
    want = [np.asarray(read_rgb(p)) for p in paths]
    ds = ImageFolderDataset(folder, split=None)
    assert all(np.array_equal(np.asarray(ds[i][0]), w) for i, w in enumerate(want))
    raw = [Path(p).read_bytes() for p in paths]
    assert all(np.array_equal(np.asarray(decode_rgb(b)), w) for b, w in zip(raw, want))
    assert all(np.array_equal(np.asarray(decode_rgb(io.BytesIO(b))), w) for b, w in zip(raw, want))
    # shards keep a file's bytes as they are (fmt only names the member), then decode them the same way
    write_shards(raw, [0, 1, 2, 3], tmp_path / "shards", per_shard=2, fmt="png")
    shards = ShardDataset(f"shards:{tmp_path}/shards/shard-{{000000..000001}}.tar", shuffle=False)
    assert all(np.array_equal(np.asarray(shards[i][0]), w) for i, w in enumerate(want))


def test_index_and_embed_agree_on_files_and_features(folder):
    enc = load_encoder("random:vit_tiny", img_size=32, patch_size=8, depth=2, seed=0)
    index = Index.build(enc, folder, batch_size=3, progress=False)
    assert index.paths == _expected(folder)
    feats = enc.embed(folder, batch_size=3, progress=False)
    assert feats.shape == (4, 192) and feats.dtype == torch.float32
    torch.testing.assert_close(index.features, F.normalize(feats, dim=1), rtol=0, atol=1e-6)
    # the folder path decodes each file exactly as the image list given by path does
    assert torch.equal(feats, enc.embed([Path(p) for p in index.paths], batch_size=3, progress=False))
    assert torch.equal(feats, enc.embed([read_rgb(p) for p in index.paths], batch_size=3, progress=False))
