"""One I-JEPA training step as a plain function: loss, backward, AdamW, EMA."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from ..models.ijepa import IJEPA
from .ema import ema_update_
from .optim import set_lr_wd


def unwrap(model: nn.Module) -> IJEPA:
    """The IJEPA module inside a DDP / compile wrapper."""
    while not isinstance(model, IJEPA):
        inner = getattr(model, "module", None) or model._orig_mod
        assert isinstance(inner, nn.Module)  # both wrappers hold the wrapped module there
        model = inner
    return model


def autocast_context(device: torch.device | str, dtype: torch.dtype | None):
    """bf16/fp16 autocast on the given device, or a no-op when dtype is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def attention_context(device: torch.device | str):
    """CUDA: scaled-dot-product attention without the cuDNN backend (flash or memory-efficient instead).

    Masks give every step new sequence lengths, and cuDNN builds an execution plan for each new
    shape: measured on an H200, ~0.3 s of host time per ViT-H/14 step, which left the GPU idle half
    the step. Other devices are untouched.
    """
    if torch.device(device).type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def _grad_sync(model: nn.Module, last: bool):
    """[distributed] DDP all-reduces gradients only after the last micro-batch (`no_sync` before it).

    FSDP2 modules keep reduce-scattering every micro-batch: that holds sharded, not full, gradients.
    """
    if not last and (no_sync := getattr(model, "no_sync", None)) is not None:
        return no_sync()
    return contextlib.nullcontext()


@dataclass
class StepResult:
    """What one step reports; tensors stay on the device so the step never syncs with the host."""

    loss: torch.Tensor
    grad_norm: torch.Tensor | None
    finite: torch.Tensor


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: list[tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]],
    lr: float,
    wd: float,
    momentum: float,
    *,
    amp_dtype: torch.dtype | None = None,
    grad_clip: float | None = None,
    skip_nonfinite: bool = False,
    ema_fn: Callable[[nn.Module, nn.Module, float], None] = ema_update_,
    scaler: torch.amp.GradScaler | None = None,
) -> StepResult:
    """Accumulate gradients over micro-batches (imgs, masks_enc, masks_pred), step AdamW, update EMA.

    With one micro-batch and no clipping this is exactly the reference's step (fp32 on CPU).
    With `skip_nonfinite`, a step whose loss or gradients are not finite changes nothing.
    Without it the step never waits for the device (no `.item()`, `bool(tensor)` or `float(tensor)`):
    the loss comes back as a device tensor for the caller to read every N steps.
    `ema_fn(target, online, momentum)` is the EMA update (foreach kernels by default).
    `scaler` (fp16 only) scales the loss so small fp16 gradients do not flush to zero, and skips steps
    whose scaled gradients overflow, as torch.amp does.
    """
    set_lr_wd(optimizer, lr, wd)
    device = micro_batches[0][0].device
    total = torch.zeros((), device=device)
    for i, (imgs, masks_enc, masks_pred) in enumerate(micro_batches):
        with _grad_sync(model, last=i == len(micro_batches) - 1):  # [distributed] forward and backward inside
            with autocast_context(device, amp_dtype), attention_context(device):
                loss = model(imgs, masks_enc, masks_pred)
            scaled = loss / len(micro_batches)
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        total += loss.detach().float()
    total /= len(micro_batches)

    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    grad_norm = None
    if scaler is not None:
        scaler.unscale_(optimizer)  # clipping and the finiteness check see the true gradients
    if grad_clip is not None:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    finite = torch.isfinite(total)
    if skip_nonfinite:
        if grad_norm is None:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        finite = finite & torch.isfinite(grad_norm)
        if not bool(finite):  # the one host sync, only on the opt-in skipping path
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.update()  # lower the scale after the overflow
            return StepResult(total, grad_norm, finite)
    if scaler is not None:
        scaler.step(optimizer)  # skips the update itself when the unscaled gradients hold inf/nan
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    ijepa = unwrap(model)
    ema_fn(ijepa.target_encoder, ijepa.encoder, momentum)
    return StepResult(total, grad_norm, finite)


def tune_cpu_allocator(enabled: bool = True) -> bool:
    """CPU training: let glibc keep freed memory for reuse instead of unmapping it (process-wide).

    By default every large tensor is a fresh mmap whose pages fault in (zero-filled) on first touch
    and are unmapped when freed, step after step; with this, freed memory is reused from the heap.
    The process keeps its peak memory mapped (RSS stays at the high-water mark). Returns whether
    the settings were applied (False off glibc). No effect on results.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    if enabled:
        ok = libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 2**31 - 1)
    else:  # glibc's defaults (its dynamic mmap threshold stays off once set)
        ok = libc.mallopt(m_mmap_max, 65536) and libc.mallopt(m_trim_threshold, 128 * 1024)
    return bool(ok)
