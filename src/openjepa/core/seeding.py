"""Seeds derived from (base seed, epoch, index, ...) and the RNG states a checkpoint carries."""

from __future__ import annotations

import numpy as np
import torch


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (base seed, epoch, batch index, ...)."""
    return int(
        np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts])
        .generate_state(2, np.uint32)
        .astype(np.uint64)
        .dot(np.array([1, 1 << 32], dtype=np.uint64))
        & ((1 << 63) - 1)
    )


def capture_rng() -> dict:
    """The global torch (and CUDA) RNG states, for a checkpoint."""
    rng: dict[str, torch.Tensor | list[torch.Tensor]] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_rng(rng: dict) -> None:
    """Restore the states `capture_rng` returned."""
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
