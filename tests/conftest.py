"""Shared fixtures: the reference's golden vectors (skipped cleanly where ../shared/golden is absent)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

# Tests use tiny models, where a second intra-op thread only adds contention on a 2-core runner.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/distributed launches processes: mark it so `-m "not distributed"` skips them."""
    for item in items:
        if "distributed" in Path(str(item.fspath)).relative_to(REPO).parts[:2]:
            item.add_marker(pytest.mark.distributed)


GOLDEN_DIR = Path(os.environ.get("OPENJEPA_GOLDEN", REPO.parent / "shared" / "golden"))
DATA_DIR = Path(
    os.environ.get("OPENJEPA_SHARED_DATA", REPO.parent / "shared" / "data")
)  # the lab bench, not the download cache


@pytest.fixture(autouse=True)
def _keep_denormals():
    """`openjepa` (the CLI, run in-process by some tests) flushes subnormals for the whole thread: undo
    it after each test, so golden and bitwise comparisons never depend on which tests ran before."""
    yield
    torch.set_flush_denormal(False)


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(
            f"golden file {path} not found: these tests need the reference's golden vectors "
            f"in ../shared/golden (or set OPENJEPA_GOLDEN)"
        )
    return path


@pytest.fixture(scope="session")
def golden_step() -> dict:
    """official_tiny_step.pt: one complete reference training step on a tiny configuration."""
    return torch.load(_need(GOLDEN_DIR / "official_tiny_step.pt"), weights_only=True)


@pytest.fixture(scope="session")
def golden_stats() -> dict:
    """official_reference_stats.json: parameter counts and mask statistics of the reference."""
    return json.loads(_need(GOLDEN_DIR / "official_reference_stats.json").read_text())


def strip_module(state_dict: dict) -> dict:
    """Drop the DDP `module.` prefix of reference checkpoints."""
    return {k.removeprefix("module."): v for k, v in state_dict.items()}
