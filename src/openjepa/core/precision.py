"""Which arithmetic a run uses: `meta.precision` (auto | fp32 | bf16 | fp16) resolved against the hardware.

`auto` takes bf16 autocast where the chip multiplies bf16 natively (CUDA with bf16 support; CPUs
with AVX512-BF16 or AMX-BF16, or Arm's BF16 extension) and fp32 elsewhere: on a CPU without them
PyTorch emulates bf16 matmuls, which is slower than fp32, so `auto` must not pick it there.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger("openjepa.precision")

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# /proc/cpuinfo flags of native bf16 matmul units: x86 AVX512-BF16 and AMX-BF16, Arm's BF16 extension
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


@dataclass(frozen=True)
class Precision:
    """The resolved choice: `name` (fp32 | bf16 | fp16), the autocast dtype (None for fp32) and why."""

    name: str
    requested: str
    reason: str

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype, None for plain fp32."""
        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.name]

    def to_dict(self) -> dict[str, str]:
        """What the run folder records."""
        return {"precision": self.name, "requested": self.requested, "reason": self.reason}


def _cpuinfo_field(cpuinfo: str | Path, keys: tuple[str, ...]) -> str | None:
    """The first value of any of `keys` in a /proc/cpuinfo-style file; None where absent or unreadable."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keys:
            return value.strip()
    return None


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (Linux `flags`, or Arm `Features`); empty where they cannot be read."""
    return frozenset((_cpuinfo_field(cpuinfo, ("flags", "Features")) or "").split())


def cpu_summary(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, object]:
    """What every bench records next to a figure: the CPU's name, the flags that set its fp32/bf16
    matmul speed (AVX2, AVX-512, AVX512-BF16, AMX) and torch's thread count."""
    flags = cpu_flags(cpuinfo)
    name = _cpuinfo_field(cpuinfo, ("model name",)) or platform.processor() or platform.machine()
    wanted = {f: f in flags for f in ("avx2", "avx512f", "avx512_bf16")}
    amx = sorted(f for f in flags if f.startswith("amx"))
    return {"name": name, "flags": {**wanted, "amx": amx}, "torch_threads": torch.get_num_threads()}


def cpu_native_bf16(flags: frozenset[str] | None = None) -> tuple[bool, str]:
    """(whether this CPU multiplies bf16 natively, the flags that say so or a description of the CPU)."""
    flags = cpu_flags() if flags is None else flags
    found = sorted(flags & NATIVE_BF16_FLAGS)
    if found:
        return True, "CPU flags " + ", ".join(found)
    vector = [f for f in ("avx512f", "avx2") if f in flags]
    return False, f"{platform.machine() or 'this'} CPU without AVX512-BF16/AMX-BF16 ({', '.join(vector) or 'no AVX'})"


def resolve_precision(requested: str, device: torch.device, *, flags: frozenset[str] | None = None) -> Precision:
    """The precision a run on `device` uses for `requested` (one of PRECISIONS), with the reason."""
    if requested not in PRECISIONS:
        raise ValueError(f"meta.precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested == "fp32":
        return Precision("fp32", requested, "asked for fp32")
    if device.type == "cuda":
        has_bf16 = torch.cuda.is_bf16_supported()
        if requested == "fp16":
            return Precision("fp16", requested, "asked for fp16 (with loss scaling)")
        if has_bf16:
            return Precision("bf16", requested, f"{torch.cuda.get_device_name(device)} has bf16 units")
        if requested == "bf16":
            raise ValueError(
                f"meta.precision=bf16 but {torch.cuda.get_device_name(device)} has no bf16 units; "
                "use meta.precision=fp16 or auto"
            )
        return Precision("fp32", requested, f"{torch.cuda.get_device_name(device)} has no bf16 units")
    if device.type != "cpu":
        if requested == "auto":
            return Precision("fp32", requested, f"no native bf16 detection for {device.type}")
        return Precision(requested, requested, f"asked for {requested} on {device.type}")
    native, why = cpu_native_bf16(flags)
    if requested == "fp16":
        raise ValueError(
            "meta.precision=fp16 on a CPU: PyTorch emulates fp16 matmuls there, many times slower "
            "than fp32; use meta.precision=bf16 (or auto) instead"
        )
    if requested == "bf16":
        if not native:
            logger.warning(
                "meta.precision=bf16 on a %s: bf16 is emulated and slower than fp32; "
                "meta.precision=auto picks fp32 here",
                why,
            )
        return Precision("bf16", requested, f"asked for bf16 ({why})")
    return Precision("bf16" if native else "fp32", requested, why)


def requested_precision(precision: str | None, use_bfloat16: bool) -> str:
    """`meta.precision` if set; otherwise the reference's `use_bfloat16` read as auto (true) or fp32 (false)."""
    if precision is not None:
        return precision
    return "auto" if use_bfloat16 else "fp32"


def flush_denormals(enabled: bool = True) -> bool:
    """Flush subnormal floats to zero on CPU (x86 FTZ/DAZ); returns whether the CPU supports it.

    Why: in I-JEPA runs whose activations drift into the subnormal range (the VICReg recipe on
    CIFAR-10 after ~1,000 steps), x86 CPUs take a microcode path for every subnormal operand and a
    training step got 1.47x slower (docs/performance.md). Values below 1.2e-38 become 0, far below
    anything fp32 training resolves. The mode is per thread and new threads inherit it: call this
    before the first parallel torch operation (the CLI does, first thing) so that the OpenMP workers
    get it too; called later it reaches only the calling thread.
    """
    return bool(torch.set_flush_denormal(enabled))
