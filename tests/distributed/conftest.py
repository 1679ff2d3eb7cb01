"""One 2-process gloo session (spawned once per test session) that runs every in-process scenario of
`_worker.py`; the tests compare its results with single-process runs. Also: free ports, the tiny config."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from . import _worker

SESSION_TIMEOUT_S = 240


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_test_shards(folder: Path, n: int = 48, per_shard: int = 12) -> list[Path]:
    """n random 40x40 images labelled 0..n-1 (the label is the sample's index), `per_shard` per tar."""
    from openjepa.data.shards import write_shards

    rng = np.random.default_rng(0)
    images = (rng.integers(0, 255, (40, 40, 3), dtype=np.uint8) for _ in range(n))
    return write_shards(images, range(n), folder, per_shard=per_shard, fmt="png")


@pytest.fixture(scope="session")
def two_ranks(tmp_path_factory):
    """{scenario: [rank-0 result, rank-1 result]} of one 2-rank gloo session, and its output folder."""
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("two_ranks")
    write_test_shards(out / "shards")
    scenarios = list(_worker.SCENARIOS)
    ctx = mp.start_processes(
        _worker.run_rank, args=(2, free_port(), str(out), scenarios), nprocs=2, join=False, start_method="spawn"
    )
    deadline, failure = time.monotonic() + SESSION_TIMEOUT_S, None
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                failure = f"the 2-rank session did not finish in {SESSION_TIMEOUT_S} s"
                break
    except Exception as e:  # a rank exited non-zero: its error is in its results file
        failure = f"a rank failed: {e}"
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    results = [
        torch.load(out / f"rank{r}.pt", weights_only=False) if (out / f"rank{r}.pt").exists() else {} for r in range(2)
    ]
    merged = {name: [results[0].get(name), results[1].get(name)] for name in scenarios}
    return {"results": merged, "folder": out, "failure": failure}


def scenario(two_ranks, name: str) -> list:
    """Both ranks' results of one scenario, failing with the worker's traceback if it raised."""
    got = two_ranks["results"][name]
    for r, res in enumerate(got):
        if isinstance(res, dict) and "error" in res:
            pytest.fail(f"scenario {name} failed on rank {r}:\n{res['error']}")
        if res is None:
            pytest.fail(f"scenario {name} has no result on rank {r} ({two_ranks['failure']})")
    return got


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
