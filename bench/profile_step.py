"""Where a training step's time goes: torch.profiler over a few fast-configuration steps.

Prints the top operators by device time (CUDA) or CPU time, and the share of matmul/attention
kernels, for the same model, batches and fast paths as bench/train_step.py.

    python bench/profile_step.py --model vit_huge --patch-size 14 --batch-size 128 --pred-depth 12 --bf16
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import build_model, make_batches, sync  # noqa: E402

from openjepa.models.ijepa import set_fast_paths  # noqa: E402
from openjepa.train.optim import make_optimizer  # noqa: E402
from openjepa.train.step import train_step  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit_tiny")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--patch-size", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--pred-depth", type=int, default=6)
    ap.add_argument("--pred-emb-dim", type=int, default=384)
    ap.add_argument("--npred", type=int, default=4)
    ap.add_argument("--min-keep", type=int, default=10)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rows", type=int, default=25, help="operators to print")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trace", help="also write a Chrome trace here")
    args = ap.parse_args()
    device = torch.device(args.device)
    model = set_fast_paths(build_model(args, device), True)
    optimizer = make_optimizer(model.encoder, model.predictor, fused=device.type == "cuda")
    amp = torch.bfloat16 if args.bf16 else None
    batches = make_batches(args, device, args.steps + 2)
    for b in batches[:2]:
        train_step(model, optimizer, [b], 1e-4, 0.04, 0.996, amp_dtype=amp)
    sync(device)
    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        for b in batches[2:]:
            train_step(model, optimizer, [b], 1e-4, 0.04, 0.996, amp_dtype=amp)
        sync(device)
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    avgs = prof.key_averages()
    print(avgs.table(sort_by=key, row_limit=args.rows, max_name_column_width=60))
    total = sum(getattr(e, "self_device_time_total" if cuda else "self_cpu_time_total") for e in avgs)

    def share(*words: str) -> float:
        t = sum(
            getattr(e, "self_device_time_total" if cuda else "self_cpu_time_total")
            for e in avgs
            if any(w in e.key.lower() for w in words)
        )
        return round(t / max(total, 1), 3)

    print(
        json.dumps(
            {
                "bench": "profile_step",
                "steps": args.steps,
                "device_ms_per_step": round(total / 1e3 / args.steps, 1),
                "share_gemm": share("gemm", "aten::mm", "aten::addmm", "matmul", "cutlass", "nvjet"),
                "share_attention": share("flash", "attention", "fmha", "efficient"),
                "share_elementwise": share("elementwise", "vectorized", "layer_norm", "gelu", "copy_"),
            }
        )
    )
    if args.trace:
        prof.export_chrome_trace(args.trace)


if __name__ == "__main__":
    main()
