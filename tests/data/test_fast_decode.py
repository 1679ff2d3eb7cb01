"""The crop fused into the decode (data.fast_decode) draws what the plain pipeline draws, and gives its pixels."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader
from torchvision import transforms as T

from openjepa.data import ImageFolderDataset, NpzImageDataset
from openjepa.data.fast_decode import FusedCrop
from openjepa.data.images import _scaled_box, read_rgb_region
from openjepa.data.raw_folder import convert_to_raw_folder
from openjepa.data.seeded import SeededTransformDataset
from openjepa.data.transforms import make_pretrain_transforms

CROP = 64
ONE_LEVEL = 1 / 255 / 0.225  # one grey level after Normalize, in the widest channel


def _photo(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A smooth photo-like picture (a colour field with grain), so JPEG behaves as on photos."""
    small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    arr = np.asarray(small, np.float32) + rng.normal(0, 6, (h, w, 1))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6))


def _folder(tmp_path, name: str, size: tuple[int, int], n: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        path = tmp_path / name / "train" / f"c{i % 2}" / f"{i:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        _photo(rng, *size).save(path, quality=90)
    return tmp_path / name


def _pair(base, transform, seed: int = 1):
    """The fused and the plain pipeline over `base`."""
    fused = SeededTransformDataset(base, transform, seed=seed)
    plain = SeededTransformDataset(base, transform, seed=seed, fast_decode=False)
    assert fused.fused is not None and plain.fused is None
    return fused, plain


def _all(ds) -> torch.Tensor:
    return torch.stack([ds[i][0] for i in range(len(ds))])


@pytest.fixture
def boxes(monkeypatch):
    """Every crop box RandomResizedCrop.get_params draws, in order."""
    drawn: list[tuple[int, int, int, int]] = []
    real = T.RandomResizedCrop.get_params

    def spy(img, scale, ratio):
        box = real(img, scale, ratio)
        drawn.append(tuple(int(v) for v in box))
        return box

    monkeypatch.setattr(T.RandomResizedCrop, "get_params", staticmethod(spy))
    return drawn


@pytest.mark.parametrize("size", [(160, 120), (640, 480)], ids=["full_decode", "dct_scaled"])
def test_fused_crop__draws_the_plain_boxes_and_matches_its_pixel_statistics(tmp_path, boxes, size):
    base = ImageFolderDataset(_folder(tmp_path, "imgs", size), split="train")
    fused, plain = _pair(base, make_pretrain_transforms(CROP, (0.3, 1.0), horizontal_flip=True))
    x = _all(fused)
    fused_boxes = list(boxes)
    boxes.clear()
    y = _all(plain)
    assert fused_boxes == boxes  # the same RNG draws: seeded runs crop the same boxes
    area = np.array([h * w / (size[0] * size[1]) for _, _, h, w in boxes])
    aspect = np.array([w / h for _, _, h, w in boxes])
    assert (
        area.min() >= 0.3 - 0.02 and area.max() <= 1.0 and 3 / 4 - 0.05 <= aspect.min() <= aspect.max() <= 4 / 3 + 0.05
    )
    assert x.shape == y.shape == (len(base), 3, CROP, CROP) and x.dtype == y.dtype == torch.float32
    # per-channel statistics of the outputs within tolerance of the plain pipeline
    assert torch.allclose(x.mean((0, 2, 3)), y.mean((0, 2, 3)), atol=0.01)
    assert torch.allclose(x.std((0, 2, 3)) / y.std((0, 2, 3)), torch.ones(3), atol=0.01)
    if size == (160, 120):  # full decode: torch's antialiased resize is Pillow's to a grey level or two
        assert (x - y).abs().max() <= 3 * ONE_LEVEL and (x - y).abs().mean() < 0.1 * ONE_LEVEL
    else:  # decoded at 1/2 or 1/4 by DCT scaling: the same picture, slightly differently low-passed
        assert (x - y).abs().mean() < 8 * ONE_LEVEL


def test_dct_scaled_box__maps_back_within_half_a_decoded_pixel():
    rng = np.random.default_rng(0)
    for _ in range(200):
        r = int(rng.choice([2, 4, 8]))
        height, width = (int(v) for v in rng.integers(r * 8, 900, 2))
        h, w = int(rng.integers(r, height + 1)), int(rng.integers(r, width + 1))
        top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        dh, dw = -(-height // r), -(-width // r)  # the decoded size: ceil(size / r)
        t, l_, hh, ww = _scaled_box((top, left, h, w), r, dh, dw)
        assert 0 <= t and 0 <= l_ and t + hh <= dh and l_ + ww <= dw and hh >= 1 and ww >= 1
        assert abs(t * r - top) <= r / 2 + 1e-9 and abs((t + hh) * r - (top + h)) <= r / 2 + 1e-9
        assert abs(l_ * r - left) <= r / 2 + 1e-9 and abs((l_ + ww) * r - (left + w)) <= r / 2 + 1e-9


def test_dct_scaling__decodes_fewer_pixels_only_where_the_crop_is_downscaled_by_two(tmp_path):
    path = tmp_path / "big.jpg"
    _photo(np.random.default_rng(1), 800, 600).save(path, quality=90)
    pixels, box = read_rgb_region(path, lambda im: (100, 200, 400, 520), (CROP, CROP))
    assert tuple(pixels.shape) == (3, 600 // 4, 800 // 4) and box == (25, 50, 100, 130)  # 400/64 >= 4
    pixels, box = read_rgb_region(path, lambda im: (0, 0, 100, 700), (CROP, CROP))
    assert tuple(pixels.shape) == (3, 600, 800) and box == (0, 0, 100, 700)  # 100/64 < 2: full size


def test_exif_orientation__falls_back_to_the_full_upright_decode(tmp_path, boxes):
    folder = tmp_path / "phone" / "train" / "a"
    folder.mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: stored 120x80, shown 80x120
    _photo(np.random.default_rng(2), 120, 80).save(folder / "p.jpg", quality=90, exif=exif.tobytes())
    base = ImageFolderDataset(tmp_path / "phone", split="train")
    fused, plain = _pair(base, make_pretrain_transforms(CROP, (0.3, 1.0)))
    x, y = fused[0][0], plain[0][0]
    assert boxes[0] == boxes[1]
    top, left, h, w = boxes[0]
    assert top + h <= 120 and left + w <= 80  # boxes of the upright 80x120 picture
    assert (x - y).abs().max() <= 3 * ONE_LEVEL


def test_seeded_fused_crops__repeat_exactly_in_any_worker_and_change_with_the_epoch(tmp_path):
    base = ImageFolderDataset(_folder(tmp_path, "imgs", (160, 120), n=8), split="train")
    ds = SeededTransformDataset(base, make_pretrain_transforms(CROP, (0.3, 1.0), horizontal_flip=True), seed=5)
    first = _all(ds)
    assert torch.equal(first, _all(ds))
    in_workers = torch.cat([b[0] for b in DataLoader(ds, batch_size=4, num_workers=2)])
    assert torch.equal(first, in_workers)
    ds.set_epoch(1)
    assert not torch.equal(first, _all(ds))


def test_unreadable_file__is_skipped_by_the_fused_decode_too(tmp_path, caplog):
    root = _folder(tmp_path, "imgs", (160, 120), n=4)
    bad = root / "train" / "c0" / "000.jpg"
    bad.write_bytes(bad.read_bytes()[:400])  # truncated
    base = ImageFolderDataset(root, split="train")
    ds = SeededTransformDataset(base, make_pretrain_transforms(CROP, (0.3, 1.0)), seed=0)
    with caplog.at_level(logging.WARNING, logger="openjepa.data"):
        x, label = ds[0]
    assert x.shape == (3, CROP, CROP) and base.num_skipped == 1 and "000.jpg" in caplog.text


def test_other_formats_and_colour_steps__go_through_the_plain_decode_and_pil_steps(tmp_path, boxes):
    folder = tmp_path / "mixed" / "train" / "a"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    _photo(rng, 150, 100).save(folder / "a.png")
    rgba = np.dstack([np.asarray(_photo(rng, 90, 120)), rng.integers(0, 256, (120, 90), dtype=np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "b.png")  # transparency composited on white, as read_rgb does
    Image.fromarray(np.asarray(_photo(rng, 140, 100))[..., 0], "L").save(folder / "c.jpg", quality=90)
    base = ImageFolderDataset(tmp_path / "mixed", split="train")
    transform = make_pretrain_transforms(CROP, (0.3, 1.0), True, True, True, 0.5)  # jitter, greyscale, blur
    fused, plain = _pair(base, transform)
    x = _all(fused)
    drawn = len(boxes)
    y = _all(plain)
    assert boxes[:drawn] == boxes[drawn:]
    assert (x - y).abs().mean() < ONE_LEVEL and (x - y).abs().max() < 12 * ONE_LEVEL


def test_npz_arrays__fused_crop_matches_the_plain_pipeline(tmp_path):
    rng = np.random.default_rng(4)
    rgb = np.stack([np.asarray(_photo(rng, 40, 40)) for _ in range(12)])
    alpha = rng.integers(0, 256, (12, 40, 40, 1), dtype=np.uint8)
    for images in (rgb, rgb[..., :1], np.concatenate([rgb, alpha], -1)):  # RGB, greyscale, RGBA
        np.savez(tmp_path / "d.npz", x_train=images, y_train=np.zeros(12, np.int64))
        base = NpzImageDataset(tmp_path / "d.npz")
        fused, plain = _pair(base, make_pretrain_transforms(32, (0.3, 1.0), horizontal_flip=True))
        a, b = _all(fused), _all(plain)
        assert a.shape == b.shape == (12, 3, 32, 32)
        assert (a - b).abs().max() <= 3 * ONE_LEVEL  # upscaled crops are bitwise Pillow's, downscaled within levels


def test_raw_folder__holds_the_decoded_pixels_and_reads_only_the_crop_rows(tmp_path):
    root = _folder(tmp_path, "imgs", (160, 120), n=6)
    done = convert_to_raw_folder(root, tmp_path / "raw")
    assert done["written"] == 6 and done["bytes"] >= 6 * 160 * 120 * 3
    assert convert_to_raw_folder(root, tmp_path / "raw")["present"] == 6  # a rerun skips what is there
    raw_file = tmp_path / "raw" / "train" / "c0" / "000.jpg.ppm"
    pixels, box = read_rgb_region(raw_file, lambda im: (30, 10, 50, 60), (CROP, CROP))
    assert tuple(pixels.shape) == (3, 50, 160) and box == (0, 10, 50, 60)
    full = torch.from_numpy(np.array(Image.open(root / "train" / "c0" / "000.jpg").convert("RGB")))
    assert torch.equal(pixels.permute(1, 2, 0), full[30:80])
    transform = make_pretrain_transforms(CROP, (0.3, 1.0), horizontal_flip=True)
    from_jpeg = _all(SeededTransformDataset(ImageFolderDataset(root, split="train"), transform, seed=2))
    from_raw = _all(SeededTransformDataset(ImageFolderDataset(tmp_path / "raw", split="train"), transform, seed=2))
    assert (from_jpeg - from_raw).abs().max() <= ONE_LEVEL  # the same crops of the same pixels
    shrunk = convert_to_raw_folder(root, tmp_path / "small", max_side=80)
    assert shrunk["written"] == 6 and Image.open(tmp_path / "small" / "train" / "c1" / "001.jpg.ppm").size == (80, 60)


def test_fused_crop__applies_only_to_a_bilinear_random_resized_crop_first():
    assert FusedCrop.of(make_pretrain_transforms(CROP)) is not None
    assert FusedCrop.of(T.Compose([T.CenterCrop(CROP), T.ToTensor()])) is None
    bicubic = T.RandomResizedCrop(CROP, interpolation=T.InterpolationMode.BICUBIC)
    assert FusedCrop.of(T.Compose([bicubic, T.ToTensor()])) is None
    assert FusedCrop.of(lambda img: img) is None


@pytest.mark.parametrize("fast", [True, False])
def test_config_switch__data_fast_decode_reaches_the_training_dataset(tmp_path, fast):
    from openjepa.config import load_config
    from openjepa.data.build import build_train_dataset

    root = _folder(tmp_path, "imgs", (80, 60), n=4)
    cfg = load_config(
        None,
        [f"data.dataset={root}", "data.crop_size=32", "mask.patch_size=4", f"data.fast_decode={str(fast).lower()}"],
    )
    ds = build_train_dataset(cfg)
    assert (ds.fused is not None) is fast
    assert ds[0][0].shape == (3, 32, 32)
