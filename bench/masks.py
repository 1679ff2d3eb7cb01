"""Mask-collator throughput: openjepa's vectorised collator vs a straightforward per-image loop.

Prints one JSON line. The baseline samples exactly like the reference (one block at a time, a retry
loop per block, torch.nonzero per mask), written here as the plain loop a first implementation has.

    python bench/masks.py --img-size 224 --patch-size 14 --batch-size 128 --batches 50
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from openjepa.masks import MultiBlockMaskCollator


def per_image_loop(batch_size: int, grid: int, g: torch.Generator, min_keep: int = 10, npred: int = 4):
    """The straightforward per-image, per-block sampler (the reference's algorithm, unvectorised)."""

    def size(scale, aspect):
        r = torch.rand(1, generator=g).item()
        keep = int(grid * grid * (scale[0] + r * (scale[1] - scale[0])))
        ar = aspect[0] + r * (aspect[1] - aspect[0])
        h, w = round(math.sqrt(keep * ar)), round(math.sqrt(keep / ar))
        return min(h, grid - 1), min(w, grid - 1)

    def block(h, w, regions=None):
        while True:
            top = int(torch.randint(0, grid - h, (1,), generator=g))
            left = int(torch.randint(0, grid - w, (1,), generator=g))
            m = torch.zeros(grid, grid, dtype=torch.int32)
            m[top : top + h, left : left + w] = 1
            for r in regions or []:
                m *= r
            idx = torch.nonzero(m.flatten()).squeeze(1)
            if len(idx) > min_keep:
                comp = torch.ones(grid, grid, dtype=torch.int32)
                comp[top : top + h, left : left + w] = 0
                return idx, comp

    p, e = size((0.15, 0.2), (0.75, 1.5)), size((0.85, 1.0), (1.0, 1.0))
    preds, encs = [], []
    for _ in range(batch_size):
        blocks = [block(*p) for _ in range(npred)]
        preds.append([b[0] for b in blocks])
        encs.append(block(*e, [b[1] for b in blocks])[0])
    k = min(len(x) for x in encs)
    return [torch.stack([x[:k] for x in encs])], [torch.stack([b[j] for b in preds]) for j in range(npred)]


def rate(fn, batches: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(batches):
        fn()
    return batches / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--patch-size", type=int, default=14)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--batches", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (DataLoader workers use 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    grid = args.img_size // args.patch_size
    collator = MultiBlockMaskCollator(
        args.img_size, args.patch_size, (0.85, 1.0), (0.15, 0.2), (0.75, 1.5), 1, 4, 10, False, seed=0
    )
    g = torch.Generator().manual_seed(0)
    ours = rate(lambda: collator.sample(args.batch_size, g), args.batches)
    base = rate(lambda: per_image_loop(args.batch_size, grid, g), max(3, args.batches // 10))
    print(
        json.dumps(
            {
                "bench": "masks",
                "img_size": args.img_size,
                "patch_size": args.patch_size,
                "batch_size": args.batch_size,
                "threads": args.threads,
                "openjepa_batches_per_s": round(ours, 2),
                "per_image_loop_batches_per_s": round(base, 2),
                "speedup": round(ours / base, 1),
                "openjepa_ms_per_batch": round(1000 / ours, 3),
                "openjepa_images_per_s": round(ours * args.batch_size),
            }
        )
    )


if __name__ == "__main__":
    main()
