"""I-JEPA training-step throughput and MFU: the fast configuration vs a plain eager baseline, one run.

Prints one JSON line. Each configuration runs in its own worker process (own allocator state, own
peak memory), both start from the same weights and step through the same batches (random images,
multi-block masks from the real collator). On a CPU the parent makes them step in turn, never at
once: AB, BA, AB, ... and reports medians, so load from other processes hits both alike; on a GPU
they run one after the other, each with the whole card's memory.

    python bench/train_step.py --model vit_tiny --img-size 224 --patch-size 16 --batch-size 16 --steps 5
    python bench/train_step.py --model vit_huge --patch-size 14 --batch-size 128 --bf16 --pred-depth 12

Baseline ("eager"): fp32, explicit softmax(QK^T)V attention, one predictor call per target block,
the predictor computing every token in every block, AdamW with foreach=False, the per-tensor EMA
loop, glibc's default allocator settings.
Fast: SDPA attention, one batched predictor call with the exact fast path (context projected once
in the first block; last block, final norm and projection on target tokens only), fused AdamW,
foreach EMA, no host syncs; optionally bf16 autocast, channels-last images, torch.compile (with
its eager fallback) and, on CPU, `tune_cpu_allocator()`.

Model FLOPs are counted analytically for the reference computation of the step, from the real mask
sizes of each batch: target-encoder forward + 3x (context-encoder forward) + 3x (predictor forward),
i.e. backward = 2x forward; matmuls only (linear layers, QK^T, AV, patch embedding). MFU divides
the achieved rate (mean FLOPs per step / median step time) by `peak_matmul_tflops`, the best rate
of a large square matmul of the same dtype on the same device measured in this run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import platform
import resource
import statistics
import time

import torch

from openjepa.masks import MultiBlockMaskCollator
from openjepa.models.ijepa import IJEPA, set_fast_paths
from openjepa.train.compile import compile_with_fallback
from openjepa.train.ema import ema_update_, ema_update_per_tensor_
from openjepa.train.optim import make_optimizer
from openjepa.train.step import train_step, tune_cpu_allocator

# --------------------------------------------------------------------------- FLOPs


def block_flops(rows: int, n: int, dim: int, hidden: int) -> int:
    """Matmul FLOPs of one pre-norm ViT block on `rows` sequences of `n` tokens (2 per multiply-add)."""
    linear = 2 * n * (3 * dim * dim + dim * dim + 2 * dim * hidden)  # qkv, proj, fc1, fc2
    attention = 2 * 2 * n * n * dim  # QK^T and AV
    return rows * (linear + attention)


def encoder_flops(model: IJEPA, batch: int, rows: int, tokens: int) -> int:
    """Patch embedding of `batch` full images + the blocks on `rows` sequences of `tokens` tokens."""
    enc = model.encoder
    n_patches = enc.num_patches
    patch_dim = enc.patch_embed.proj.in_channels * enc.patch_size**2
    hidden = enc.blocks[0].mlp.fc1.out_features
    return 2 * batch * n_patches * patch_dim * enc.embed_dim + enc.depth * block_flops(
        rows, tokens, enc.embed_dim, hidden
    )


def forward_flops(
    model: IJEPA, batch: int, masks_enc: list[torch.Tensor], masks_pred: list[torch.Tensor]
) -> dict[str, int]:
    """Forward matmul FLOPs of the target encoder, the context encoder and the predictor."""
    pred = model.predictor
    d, p = pred.embed_dim, pred.predictor_embed_dim
    hidden = pred.predictor_blocks[0].mlp.fc1.out_features
    target = encoder_flops(model, batch, batch, model.encoder.num_patches)
    context = sum(encoder_flops(model, batch, batch, m.shape[1]) for m in masks_enc)
    context -= (len(masks_enc) - 1) * encoder_flops(model, batch, 0, 0)  # one patch embedding per image
    predictor = 0
    for me in masks_enc:
        kc = me.shape[1]
        predictor += 2 * batch * kc * d * p  # predictor_embed, once per context row
        for mask in masks_pred:
            kp = mask.shape[1]
            predictor += len(pred.predictor_blocks) * block_flops(batch, kc + kp, p, hidden)
            predictor += 2 * batch * kp * p * pred.predictor_proj.out_features
    return {"target": target, "context": context, "predictor": predictor}


def step_flops(model: IJEPA, batch: int, masks_enc: list[torch.Tensor], masks_pred: list[torch.Tensor]) -> int:
    """Model FLOPs of one reference training step: target forward + 3x (context + predictor forward)."""
    f = forward_flops(model, batch, masks_enc, masks_pred)
    return f["target"] + 3 * (f["context"] + f["predictor"])


# --------------------------------------------------------------------------- hardware peak


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_matmul_tflops(device: torch.device, dtype: torch.dtype, n: int | None = None, reps: int = 5) -> float:
    """Best TFLOP/s of an n x n @ n x n matmul (n = 8192 on GPU, 2048 on CPU)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    inner = 10 if device.type == "cuda" else 1
    a @ b
    sync(device)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - t0) / inner)
    return 2 * n**3 / best / 1e12


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# --------------------------------------------------------------------------- one configuration per process


def make_batches(args, device: torch.device, count: int) -> list:
    """The same `count` batches in every process: random images and the real collator's masks."""
    collator = MultiBlockMaskCollator(
        args.img_size,
        args.patch_size,
        (0.85, 1.0),
        (0.15, 0.2),
        (0.75, 1.5),
        1,
        args.npred,
        args.min_keep,
        False,
        seed=args.seed,
    )
    g = torch.Generator().manual_seed(args.seed)
    out = []
    for _ in range(count):
        masks_enc, masks_pred = collator.sample(args.batch_size, g)
        imgs = torch.randn(args.batch_size, 3, args.img_size, args.img_size, generator=g)
        out.append((imgs.to(device), [m.to(device) for m in masks_enc], [m.to(device) for m in masks_pred]))
    return out


def build_model(args, device: torch.device | str) -> IJEPA:
    torch.manual_seed(args.seed)
    return IJEPA.build(
        args.model, args.patch_size, args.img_size, pred_depth=args.pred_depth, pred_emb_dim=args.pred_emb_dim
    ).to(device)


def worker(conn, args: argparse.Namespace, role: str) -> None:
    """Runs one configuration ('eager' baseline or 'fast') in its own process, step by step on command.

    Separate processes keep the two configurations from sharing allocator state (and let the fast
    one tune the allocator alone) and give each its own peak memory.
    """
    if args.threads:
        torch.set_num_threads(args.threads)
    # --baseline fast-fp32: the baseline process runs the fast configuration too, in fp32, so the
    # ratio is bf16 autocast alone (what meta.precision=bf16 changes in a run)
    fast = role == "fast" or args.baseline == "fast-fp32"
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
        torch.backends.cudnn.allow_tf32 = False
    tuned = fast and args.tune_allocator and device.type == "cpu" and tune_cpu_allocator()
    model = set_fast_paths(build_model(args, device), fast)
    if fast:
        optimizer = make_optimizer(model.encoder, model.predictor, fused=True)
        net = compile_with_fallback(model, enabled=args.compile, dynamic=True, probe_steps=args.compile_probe)
        ema_fn, amp = ema_update_, torch.bfloat16 if args.bf16 and role == "fast" else None
    else:
        optimizer = make_optimizer(model.encoder, model.predictor, foreach=False)
        net, ema_fn, amp = model, ema_update_per_tensor_, None
    batches = make_batches(args, device, args.total_steps)
    if fast and args.channels_last:
        batches = [(x.contiguous(memory_format=torch.channels_last), me, mp) for x, me, mp in batches]
    losses = []
    conn.send("ready")
    while True:
        cmd, i = conn.recv()
        if cmd == "step":
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            r = train_step(net, optimizer, [batches[i]], 1e-4, 0.04, 0.996, amp_dtype=amp, ema_fn=ema_fn)
            sync(device)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            conn.send((wall, cpu))
            losses.append(r.loss)
        else:
            if device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(device)
            else:
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            mode = "off"
            if args.compile and fast:
                mode = net.mode + (f" ({net.reason})" if net.reason else "")
            timed = batches[args.warmup :]
            conn.send(
                {
                    "peak_mem_mb": peak / 2**20,
                    "losses": [float(x) for x in losses],
                    "compile": mode,
                    "tuned_allocator": bool(tuned),
                    "flops": [step_flops(model, args.batch_size, me, mp) for _, me, mp in timed],
                    "context_tokens": [me[0].shape[1] for _, me, _ in timed],
                    "target_tokens": [mp[0].shape[1] for _, _, mp in timed],
                    "nenc": len(timed[0][1]),
                    "npred": len(timed[0][2]),
                }
            )
            return


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit_tiny")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--patch-size", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1, 4 with --compile)")
    ap.add_argument("--pred-depth", type=int, default=6)
    ap.add_argument("--pred-emb-dim", type=int, default=384)
    ap.add_argument("--npred", type=int, default=4)
    ap.add_argument("--min-keep", type=int, default=10, help="the collator's min_keep (lower it for tiny grids)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast in the fast configuration")
    ap.add_argument("--compile", action="store_true", help="torch.compile the fast model (eager fallback)")
    ap.add_argument(
        "--compile-probe",
        type=int,
        default=0,
        help="with --compile: steps of eager-vs-compiled probing before keeping the faster",
    )
    ap.add_argument("--channels-last", action="store_true", help="channels-last images in the fast configuration")
    ap.add_argument(
        "--tune-allocator",
        action="store_true",
        help="CPU: tune_cpu_allocator() in the fast configuration (no gain measured at low load)",
    )
    ap.add_argument("--no-baseline", action="store_true", help="time the fast configuration only")
    ap.add_argument(
        "--baseline",
        choices=["eager", "fast-fp32"],
        default="eager",
        help="eager: the plain fp32 baseline (default); fast-fp32: the fast configuration in fp32 (with --bf16: "
        "the gain of bf16 autocast alone)",
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--peak-size", type=int, default=None, help="matmul size for the peak (8192 GPU, 2048 CPU)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    args.warmup = args.warmup if args.warmup is not None else (4 if args.compile else 1)
    args.total_steps = args.warmup + args.steps
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False

    roles = ["fast"] if args.no_baseline else ["eager", "fast"]
    # CPU: both processes live at once and step in turn (AB, BA, ...), so other load hits both alike.
    # GPU: one after the other, each with the whole card; interleaving would have to hand memory back
    # between steps (empty_cache), and re-allocating it would be timed inside every step.
    sequential = device.type == "cuda"
    ctx = mp.get_context("spawn")
    conns, procs = {}, {}

    def start(role: str) -> None:
        conns[role], child = ctx.Pipe()
        procs[role] = ctx.Process(target=worker, args=(child, args, role), daemon=True)
        procs[role].start()
        assert conns[role].recv() == "ready"

    times: dict[str, list[float]] = {k: [] for k in roles}
    cpu_times: dict[str, list[float]] = {k: [] for k in roles}
    final = {}

    def step(role: str, i: int) -> None:
        conns[role].send(("step", i))
        wall, cpu = conns[role].recv()
        if i >= args.warmup:
            times[role].append(wall)
            cpu_times[role].append(cpu)

    def finish(role: str) -> None:
        conns[role].send(("finish", None))
        final[role] = conns[role].recv()
        procs[role].join()

    if sequential:
        peak = peak_matmul_tflops(device, dtype, args.peak_size)
        for role in roles:
            start(role)
            for i in range(args.total_steps):
                step(role, i)
            finish(role)
    else:
        for role in roles:
            start(role)
        peak = peak_matmul_tflops(device, dtype, args.peak_size)  # while the workers wait
        for i in range(args.total_steps):
            for role in roles if i % 2 == 0 else roles[::-1]:  # AB, BA, AB, ...: one process runs at a time
                step(role, i)
        for role in roles:
            finish(role)
    peak = max(peak, peak_matmul_tflops(device, dtype, args.peak_size))

    info = final["fast"]
    flops = statistics.fmean(info["flops"])

    def summary(role: str) -> dict:
        med = statistics.median(times[role])
        achieved = flops / med / 1e12
        return {
            "imgs_per_s": round(args.batch_size / med, 3),
            "step_s_median": round(med, 4),
            "step_s_all": [round(t, 4) for t in times[role]],
            "cpu_s_median": round(statistics.median(cpu_times[role]), 4),
            "tflops_achieved": round(achieved, 5),
            "mfu": round(achieved / peak, 4),
            "peak_mem_mb": round(final[role]["peak_mem_mb"], 1),
        }

    out = {
        "bench": "train_step",
        "model": args.model,
        "img_size": args.img_size,
        "patch_size": args.patch_size,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "pred_depth": args.pred_depth,
        "pred_emb_dim": args.pred_emb_dim,
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "dtype": "bf16-autocast" if args.bf16 else "fp32",
        "tuned_allocator": final["fast"]["tuned_allocator"],
        "compile": final["fast"]["compile"],
        "channels_last": args.channels_last,
        "masks": {
            "nenc": info["nenc"],
            "npred": info["npred"],
            "context_tokens": statistics.fmean(info["context_tokens"]),
            "target_tokens": statistics.fmean(info["target_tokens"]),
        },
        "gflops_per_step": round(flops / 1e9, 2),
        "peak_matmul_tflops": round(peak, 4),
        "peak_mem_kind": "max_memory_allocated" if device.type == "cuda" else "process peak RSS",
    }
    out.update(summary("fast"))
    if not args.no_baseline:
        out["baseline"] = {"kind": args.baseline, **summary("eager")}
        out["speedup"] = round(out["baseline"]["step_s_median"] / out["step_s_median"], 3)
        # Step i is the same batch in both: the median of the per-step ratios is robust to mask-size
        # variation between batches and to slow drifts in the machine's load.
        out["speedup_paired_median"] = round(statistics.median(b / f for b, f in zip(times["eager"], times["fast"])), 3)
        # Process CPU seconds per step (all threads): far less sensitive to other processes' load.
        out["cpu_time_speedup"] = round(out["baseline"]["cpu_s_median"] / out["cpu_s_median"], 3)
        # Same weights, same batches: the first losses agree to float rounding in fp32.
        out["first_loss_abs_diff"] = abs(final["fast"]["losses"][0] - final["eager"]["losses"][0])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
