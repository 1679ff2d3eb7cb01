"""Fixtures for the interop tests: the golden reference checkpoint and tiny locally built encoders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from openjepa.interop import infer_encoder_arch, save_encoder_safetensors
from openjepa.models import VisionTransformer

GOLDEN_HEADS = 4  # official_tiny_step.pt: width 64, 4 heads (no preset has width 64)


@pytest.fixture(scope="session")
def golden_ref(golden_step) -> dict:
    """The reference's own checkpoint dict (networks with the DDP `module.` prefix)."""
    return golden_step["checkpoint_official_format"]


@pytest.fixture(scope="session")
def golden_ref_file(golden_ref, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("golden") / "tiny-latest.pth.tar"
    torch.save(golden_ref, path)
    return path


def tiny_encoder(seed: int = 0, **kw) -> VisionTransformer:
    """A small random encoder (built locally, never downloaded)."""
    args = dict(img_size=32, patch_size=8, embed_dim=192, depth=2, num_heads=3)  # vit_tiny width, 2 blocks
    args.update(kw)
    torch.manual_seed(seed)
    enc = VisionTransformer(**args).eval()
    with torch.no_grad():  # non-trivial norms/biases so that a swapped mapping would show
        for p in enc.parameters():
            if p.requires_grad and p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return enc


def export_safetensors(enc: VisionTransformer, path: Path, which: str = "target") -> Path:
    arch = infer_encoder_arch(enc.state_dict(), num_heads=enc.num_heads)
    return save_encoder_safetensors(enc.state_dict(), arch, path, which=which)


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
