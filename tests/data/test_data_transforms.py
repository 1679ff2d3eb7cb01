"""Pretraining / evaluation transforms: output shapes, normalisation and the reference pipeline."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from openjepa.data import IMAGENET_MEAN, IMAGENET_STD, make_eval_transforms, make_pretrain_transforms
from openjepa.data.transforms import RandomGaussianBlurPIL


def _rgb(h, w, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_pretrain_transforms__default_output_is_normalised_crop():
    tf = make_pretrain_transforms(16)
    out = tf(_rgb(40, 50))
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32


def test_pretrain_transforms__constant_image_maps_to_imagenet_normalised_value():
    tf = make_pretrain_transforms(8)
    out = tf(Image.new("RGB", (20, 20), (255, 0, 128)))
    expected = [(v / 255 - m) / s for v, m, s in zip((255, 0, 128), IMAGENET_MEAN, IMAGENET_STD)]
    torch.testing.assert_close(out.mean(dim=(1, 2)), torch.tensor(expected), atol=1e-4, rtol=0)


def test_pretrain_transforms__pipeline_matches_reference_order_and_params():
    tf = make_pretrain_transforms(
        32,
        crop_scale=(0.5, 0.9),
        horizontal_flip=True,
        color_distortion=True,
        gaussian_blur=True,
        color_jitter_strength=0.5,
    )
    kinds = [type(t) for t in tf.transforms]
    assert kinds == [
        T.RandomResizedCrop,
        T.RandomHorizontalFlip,
        T.RandomApply,
        T.RandomGrayscale,
        RandomGaussianBlurPIL,
        T.ToTensor,
        T.Normalize,
    ]
    rrc = tf.transforms[0]
    assert rrc.size == (32, 32) and rrc.scale == (0.5, 0.9)
    assert rrc.ratio == pytest.approx((3 / 4, 4 / 3))
    assert rrc.interpolation == T.InterpolationMode.BILINEAR
    jitter_apply = tf.transforms[2]
    assert jitter_apply.p == 0.8
    cj = jitter_apply.transforms[0]
    assert cj.brightness == pytest.approx((0.6, 1.4)) and cj.hue == pytest.approx((-0.1, 0.1))
    assert tf.transforms[3].p == 0.2
    blur = tf.transforms[4]
    assert (blur.p, blur.radius_min, blur.radius_max) == (0.5, 0.1, 2.0)
    assert tf(_rgb(48, 40)).shape == (3, 32, 32)


def test_pretrain_transforms__same_torch_seed_gives_same_augmentation():
    tf = make_pretrain_transforms(16, horizontal_flip=True, color_distortion=True, gaussian_blur=True)
    img = _rgb(30, 30)
    torch.manual_seed(3)
    a = tf(img)
    torch.manual_seed(3)
    b = tf(img)
    torch.manual_seed(4)
    c = tf(img)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_eval_transforms__resizes_short_side_then_centre_crops():
    tf = make_eval_transforms(16, resize_ratio=1.25)
    # left half black, right half white: the centre crop of the 20x40 resize keeps both halves
    arr = np.zeros((32, 64, 3), dtype=np.uint8)
    arr[:, 32:] = 255
    out = tf(Image.fromarray(arr))
    assert out.shape == (3, 16, 16)
    black = (0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    white = (1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    assert out[0, :, 0].mean().item() == pytest.approx(black, abs=1e-3)
    assert out[0, :, -1].mean().item() == pytest.approx(white, abs=1e-3)


def test_eval_transforms__ratio_one_on_tiny_image_is_plain_resize():
    img = _rgb(32, 32)
    out = make_eval_transforms(32)(img)
    ref = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)(T.ToTensor()(img))
    torch.testing.assert_close(out, ref)


def test_eval_transforms__ratio_below_one_is_rejected_with_hint():
    with pytest.raises(ValueError, match="crop_pct"):
        make_eval_transforms(224, resize_ratio=0.875)
