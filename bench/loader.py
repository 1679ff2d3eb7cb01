"""Images per second of the pretraining input pipeline against a plain torchvision loader, one run.

Prints one JSON line. The pipeline measured is the real one: `build_train_dataset(cfg)` (decode,
random resized crop, flip, normalise; `data.fast_decode` on, as by default), `build_collator(cfg)`
(multi-block masks) and `make_loader`, on generated photo-like JPEGs (smooth colour fields, hard-edged
objects and sensor grain at ImageNet's typical 500x375, quality 90: about 80 KB a file, as real
photos) and on an .npz of smaller photos. Next to it, in the same run:

* `baseline`: torchvision `ImageFolder` + `RandomResizedCrop` + `RandomHorizontalFlip` + `ToTensor` +
  `Normalize` in a plain `DataLoader` (for the .npz: the same transforms on PIL images of the array);
* `plain_decode`: our pipeline with `data.fast_decode` off (full decode, Pillow crop), to show what
  the fused decode alone gives;
* `raw_folder`: our pipeline on the JPEG folder converted once to raw pixels
  (`python -m openjepa.data.raw_folder`: the same pixels, about 7x the disk; `raw_conversion`
  reports its rate and size).

Each loader is timed after its first two batches (worker start-up and the prefetch fill are reported
apart, as `first_batch_s`), over `--batches` batches; the configurations take turns, round after
round (`--rounds`), and the medians are reported, so load from other processes hits all alike.
`imgs_per_s_per_worker` is the rate with one worker; `cores_to_feed_h200_vit_h14` is the H200's
ViT-H/14 training rate (475 images/s, docs/performance.md) over it.

    python bench/loader.py                       # 640 JPEGs, 224 crops, batch 64, workers 1 and all cores
    python bench/loader.py --workers 1,2,4 --rounds 5 --data-dir /tmp/loader-bench
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image, ImageDraw, ImageFilter, features
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets as tv_datasets
from torchvision import transforms as T

from openjepa.config import load_config
from openjepa.data.build import build_train_dataset
from openjepa.data.loader import make_loader
from openjepa.data.raw_folder import convert_to_raw_folder
from openjepa.data.seeded import SeededTransformDataset
from openjepa.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from openjepa.masks.build import build_collator

H200_VIT_H14_IMGS_PER_S = 475.0  # bench/train_step.py on one H200, docs/performance.md
CROP_SCALE = (0.3, 1.0)  # the I-JEPA default (data.crop_scale)

# --------------------------------------------------------------------------- generated photos


def _field(rng: np.random.Generator, h: int, w: int, alpha: float) -> np.ndarray:
    """A (h, w) random field with a 1/f^alpha power spectrum (natural images: alpha near 2), unit std."""
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0 / max(h, w)
    spec = f ** (-alpha / 2) * (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape))
    x = np.fft.irfft2(spec, s=(h, w))
    return (x - x.mean()) / x.std()


def photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A photo-like RGB picture: smooth luminance and colour fields, a few hard-edged objects, grain."""
    lum = rng.uniform(60, 190) + rng.uniform(25, 50) * _field(rng, height, width, 2.4)
    cb, cr = (128 + 25 * _field(rng, height, width, 3.2) + rng.normal(0, 15) for _ in range(2))
    im = Image.fromarray(np.clip(np.stack([lum, cb, cr], -1), 0, 255).astype(np.uint8), "YCbCr").convert("RGB")
    draw = ImageDraw.Draw(im)
    s = min(width, height)
    for _ in range(rng.integers(1, 5)):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.05, 0.3) * s
        angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(3, 9)))
        pts = [(cx + r * np.cos(a) * rng.uniform(0.6, 1.2), cy + r * np.sin(a) * rng.uniform(0.6, 1.2)) for a in angles]
        draw.polygon(pts, fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    arr = np.asarray(im.filter(ImageFilter.GaussianBlur(0.7)), np.float32) + rng.normal(0, 8, (height, width, 1))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def make_data(folder: Path, n: int, size: tuple[int, int], quality: int, npz_side: int) -> dict[str, Any]:
    """The generated data, made once per settings into `folder`: the JPEG folder (`jpeg`), its one-time
    raw-pixel conversion (`raw`, with what the conversion cost), the .npz (`npz`), the mean JPEG size."""
    tag = f"n{n}_{size[0]}x{size[1]}_q{quality}_npz{npz_side}"
    root, npz, raw = folder / f"jpeg_{tag}", folder / f"photos_{tag}.npz", folder / f"raw_{tag}"
    done = folder / f"{tag}.json"
    if not done.exists():
        rng = np.random.default_rng(0)
        for i in range(n):
            path = root / "train" / f"class{i % 4}" / f"{i:05d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            photo(rng, *size).save(path, quality=quality)
        x = np.stack([np.asarray(photo(rng, npz_side, npz_side)) for _ in range(n)])
        with open(npz, "wb") as f:
            np.savez(f, x_train=x, y_train=np.arange(n) % 4)
        conversion = convert_to_raw_folder(root, raw, workers=os.cpu_count() or 1)
        done.write_text(json.dumps(conversion))
    conversion = json.loads(done.read_text())
    jpeg_bytes = sum(p.stat().st_size for p in root.rglob("*.jpg"))
    return {
        "jpeg": root,
        "raw": raw,
        "npz": npz,
        "mean_jpeg_kb": jpeg_bytes / n / 1e3,
        "raw_conversion": {
            "imgs_per_s": round(conversion["written"] / conversion["seconds"], 1),
            "workers": os.cpu_count(),
            "mean_kb": round(conversion["bytes"] / max(conversion["written"], 1) / 1e3, 1),
            "disk_vs_jpeg": round(conversion["bytes"] / jpeg_bytes, 2),
        },
    }


# --------------------------------------------------------------------------- the loaders


class _ArrayImages(Dataset):
    """The plain way to read an (N, H, W, 3) uint8 array: a PIL image per item, then the transforms."""

    def __init__(self, images: np.ndarray, transform: Callable) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        return self.transform(Image.fromarray(self.images[i])), 0


def baseline_loader(source: Path, crop: int, batch: int, workers: int) -> DataLoader:
    """torchvision's ImageFolder (or the array as PIL images) with the plain transforms."""
    transform = T.Compose(
        [
            T.RandomResizedCrop(crop, scale=CROP_SCALE),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    if source.suffix == ".npz":
        with np.load(source) as z:
            ds: Dataset = _ArrayImages(z["x_train"], transform)
    else:
        ds = tv_datasets.ImageFolder(str(source / "train"), transform=transform)
    return DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True)


def openjepa_loader(spec: str, crop: int, patch: int, batch: int, workers: int, fast: bool) -> DataLoader:
    """The pretraining loader as `openjepa pretrain` builds it (fast decode on, or off with `fast=False`)."""
    cfg = load_config(
        None,
        [
            f"data.dataset={spec}",
            f"data.crop_size={crop}",
            f"mask.patch_size={patch}",
            f"mask.min_keep={min(10, (crop // patch) ** 2 // 16)}",  # the reference's 10; fewer on tiny grids
            f"data.batch_size={batch}",
            f"data.num_workers={workers}",
            "data.use_horizontal_flip=true",
        ],
    )
    ds = build_train_dataset(cfg)
    if not fast:
        assert isinstance(ds, SeededTransformDataset)
        ds = SeededTransformDataset(ds.base, ds.transform, seed=cfg.meta.seed, fast_decode=False)
    return make_loader(ds, batch, build_collator(cfg), seed=cfg.meta.seed, num_workers=workers)


def measure(
    make: Callable[[int], DataLoader], workers: int, batches: int, batch: int, warm: int = 2
) -> dict[str, float]:
    """Images per second of a fresh loader of `workers` workers over `batches` batches after `warm`
    (start-up timed apart)."""
    t0 = time.perf_counter()
    it = iter(make(workers))
    next(it)
    first = time.perf_counter() - t0
    for _ in range(warm - 1):
        next(it)
    t1 = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batches * batch / (time.perf_counter() - t1)
    del it  # shuts the workers down before the next configuration runs
    return {"imgs_per_s": rate, "first_batch_s": first}


# --------------------------------------------------------------------------- the run


def machine() -> dict[str, Any]:
    """CPU model and flags (as lscpu shows them), core count, load and library versions."""
    info: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())  # the first processor's
    model, flags = info.get("model name") or platform.processor() or platform.machine(), info.get("flags", "")
    return {
        "cpu": model,
        "cpu_flags": flags,
        "cores": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pillow": PIL.__version__,
        "libjpeg_turbo": features.version("libjpeg_turbo"),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=640)
    p.add_argument("--size", default="500x375", help="JPEG width x height")
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--patch-size", type=int, default=14, help="mask grid of the JPEG run (ViT-H/14)")
    p.add_argument("--npz-side", type=int, default=64, help="side of the .npz photos (the 64px recipes)")
    p.add_argument("--npz-crop", type=int, default=64)
    p.add_argument("--npz-patch-size", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=8, help="timed batches per loader")
    p.add_argument("--workers", default=None, help="comma-separated worker counts (default: 1 and all cores)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--data-dir", default=None, help="where the generated images are kept (default: a temp dir)")
    args = p.parse_args(argv)
    cores = os.cpu_count() or 1
    args.workers = [int(w) for w in args.workers.split(",")] if args.workers else sorted({1, cores})
    w, h = (int(v) for v in args.size.lower().split("x"))
    args.size = (w, h)
    if args.images < (args.batches + 2) * args.batch_size:
        p.error(f"--images must be at least (batches + 2) x batch-size = {(args.batches + 2) * args.batch_size}")
    return args


def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Every configuration at every worker count, round after round; medians and the headline ratios."""
    data = make_data(folder, args.images, args.size, args.quality, args.npz_side)
    root, raw, npz, b = data["jpeg"], data["raw"], data["npz"], args.batch_size
    configs: dict[str, dict[str, Callable[[int], DataLoader]]] = {
        "jpeg": {
            "baseline": lambda w: baseline_loader(root, args.crop, b, w),
            "openjepa": lambda w: openjepa_loader(f"folder:{root}", args.crop, args.patch_size, b, w, True),
            "plain_decode": lambda w: openjepa_loader(f"folder:{root}", args.crop, args.patch_size, b, w, False),
            "raw_folder": lambda w: openjepa_loader(f"folder:{raw}", args.crop, args.patch_size, b, w, True),
        },
        "npz": {
            "baseline": lambda w: baseline_loader(npz, args.npz_crop, b, w),
            "openjepa": lambda w: openjepa_loader(str(npz), args.npz_crop, args.npz_patch_size, b, w, True),
        },
    }
    runs: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for case, loaders in configs.items():
            for name, make in loaders.items():
                for w in args.workers:
                    runs.setdefault((case, name, w), []).append(measure(make, w, args.batches, b))
    results: dict[str, Any] = {}
    for (case, name, w), rs in runs.items():
        rates = [r["imgs_per_s"] for r in rs]
        results.setdefault(case, {}).setdefault(name, {})[str(w)] = {
            "imgs_per_s": round(statistics.median(rates), 1),
            "imgs_per_s_per_worker": round(statistics.median(rates) / max(w, 1), 1),
            "first_batch_s": round(statistics.median(r["first_batch_s"] for r in rs), 3),
            "rounds": [round(r, 1) for r in rates],
        }
    one = str(min(args.workers, key=lambda w: (w != 1, w)))  # the per-worker figure: one worker if run
    jpeg = {k: v[one]["imgs_per_s_per_worker"] for k, v in results["jpeg"].items()}
    return {
        "bench": "loader",
        **machine(),
        "jpeg": {"size": list(args.size), "quality": args.quality, "mean_kb": round(data["mean_jpeg_kb"], 1)},
        "crop": args.crop,
        "raw_conversion": data["raw_conversion"],
        "npz": {"side": args.npz_side, "crop": args.npz_crop},
        "images": args.images,
        "batch_size": b,
        "timed_batches": args.batches,
        "workers": args.workers,
        "rounds": args.rounds,
        "results": results,
        "per_worker_workers": int(one),
        "jpeg_speedup_per_worker": round(jpeg["openjepa"] / jpeg["baseline"], 2),
        "raw_folder_speedup_per_worker": round(jpeg["raw_folder"] / jpeg["baseline"], 2),
        "npz_speedup_per_worker": round(
            results["npz"]["openjepa"][one]["imgs_per_s_per_worker"]
            / results["npz"]["baseline"][one]["imgs_per_s_per_worker"],
            2,
        ),
        "h200_vit_h14_imgs_per_s": H200_VIT_H14_IMGS_PER_S,
        "cores_to_feed_h200_vit_h14": round(H200_VIT_H14_IMGS_PER_S / jpeg["openjepa"], 2),
        "cores_to_feed_h200_vit_h14_raw_folder": round(H200_VIT_H14_IMGS_PER_S / jpeg["raw_folder"], 2),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)  # the main process only receives batches; as DataLoader workers run
    if args.data_dir:
        Path(args.data_dir).mkdir(parents=True, exist_ok=True)
        print(json.dumps(run(args, Path(args.data_dir))))
    else:
        with tempfile.TemporaryDirectory(prefix="openjepa-loader-") as tmp:
            print(json.dumps(run(args, Path(tmp))))


if __name__ == "__main__":
    main()
