"""Feature-extraction throughput: openjepa's encoder vs transformers.IJepaModel, same weights, one run.

Prints one JSON line. Our encoder's weights are written as a Hugging Face folder with
`openjepa.interop.hf.save_hf` and read back by `IJepaModel.from_pretrained` (SDPA attention), so
both models hold the same weights; both get the same random images in the same dtype, in eval
mode under `torch.inference_mode`. Ours runs as shipped: SDPA attention, contiguous tokens and, on
CPU, the batch in cache-sized chunks (`VisionTransformer.cpu_chunk_bytes`).
Timed batches alternate (AB, BA, ...); medians are reported.
The output is the last hidden state (B, N, D) of each; their largest difference is reported too.

    python bench/extract.py --model vit_tiny --img-size 224 --patch-size 16 --batch-size 64 --batches 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch

from openjepa.models import create_encoder
from openjepa.train.step import tune_cpu_allocator


def hf_model_with_same_weights(encoder, folder: str, dtype: torch.dtype):
    """transformers.IJepaModel holding `encoder`'s weights (written and read as a HF folder)."""
    from transformers import IJepaModel

    from openjepa.interop.hf import save_hf

    arch = {
        "patch_size": encoder.patch_size,
        "img_size": list(encoder.img_size),
        "embed_dim": encoder.embed_dim,
        "depth": encoder.depth,
        "num_heads": encoder.num_heads,
        "mlp_ratio": encoder.blocks[0].mlp.fc1.out_features / encoder.embed_dim,
    }
    save_hf(encoder.state_dict(), arch, folder)
    return IJepaModel.from_pretrained(folder, attn_implementation="sdpa", dtype=dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit_tiny")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--patch-size", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batches", type=int, default=5, help="timed batches per model")
    ap.add_argument("--bf16", action="store_true", help="both models in bfloat16")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--tune-allocator",
        action="store_true",
        help="CPU: keep freed memory for reuse (glibc mallopt), for both models",
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.tune_allocator:
        tune_cpu_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False

    torch.manual_seed(args.seed)
    ours = create_encoder(args.model, patch_size=args.patch_size, img_size=args.img_size)
    with tempfile.TemporaryDirectory() as folder:
        hf = hf_model_with_same_weights(ours, folder, dtype)
    ours = ours.to(device=device, dtype=dtype).eval()
    hf = hf.to(device).eval()

    g = torch.Generator().manual_seed(args.seed)
    images = [
        torch.randn(args.batch_size, 3, args.img_size, args.img_size, generator=g).to(device, dtype)
        for _ in range(args.batches + 1)
    ]

    def run_ours(x: torch.Tensor) -> torch.Tensor:
        return ours(x)

    def run_hf(x: torch.Tensor) -> torch.Tensor:
        return hf(pixel_values=x).last_hidden_state

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    models = {"openjepa": run_ours, "transformers": run_hf}
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        diff = (run_ours(images[0]).float() - run_hf(images[0]).float()).abs().max().item()  # + warm-up
        for i, x in enumerate(images[1:]):
            for name in list(models) if i % 2 == 0 else list(models)[::-1]:
                sync()
                t0 = time.perf_counter()
                models[name](x)
                sync()
                times[name].append(time.perf_counter() - t0)

    rate = {k: args.batch_size / statistics.median(v) for k, v in times.items()}
    import transformers

    print(
        json.dumps(
            {
                "bench": "extract",
                "model": args.model,
                "img_size": args.img_size,
                "patch_size": args.patch_size,
                "batch_size": args.batch_size,
                "batches": args.batches,
                "device": str(device),
                "dtype": str(dtype).removeprefix("torch."),
                "threads": torch.get_num_threads(),
                "tune_allocator": args.tune_allocator,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "imgs_per_s": round(rate["openjepa"], 3),
                "hf_imgs_per_s": round(rate["transformers"], 3),
                "speedup_vs_hf": round(rate["openjepa"] / rate["transformers"], 3),
                "batch_s_all": {k: [round(t, 4) for t in v] for k, v in times.items()},
                "max_abs_diff": diff,
                "openjepa_cpu_chunk": ours.inference_chunk(images[0]) if device.type == "cpu" else None,
            }
        )
    )


if __name__ == "__main__":
    main()
