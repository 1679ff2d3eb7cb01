"""CLI tests call `openjepa.cli.main.main([...])` in-process on tiny data, single-threaded (a shared
2-core machine makes intra-op and BLAS threads spin-wait on busy cores)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

# A 1-block vit_tiny at 32 px with 4-px patches: 64 tokens, fast enough for every probe on CPU.
TINY = ["--checkpoint", "random:vit_tiny", "--patch-size", "4", "--img-size", "32", "--depth", "1", "--no-progress"]


@pytest.fixture(autouse=True)
def _single_thread():
    # numpy/scipy BLAS too: sklearn's lbfgs on tiny low-shot subsets is ~30x slower with 2 spinning
    # OpenBLAS threads on a busy machine than with one.
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)


def write_tiny_npz(
    path: Path, n_classes: int = 7, per_class_train: int = 8, per_class_test: int = 3, size: int = 16, seed: int = 0
) -> Path:
    """A separable .npz in the ../shared/data layout: class c is a flat colour plus noise, with an
    extra label array (y_*_dist) and raw counts (n_objects_*) like clevr_tiny_128px.npz."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(n_classes, 3))

    def split(per_class: int):
        y = np.repeat(np.arange(n_classes), per_class)
        rng.shuffle(y)
        x = colours[y][:, None, None, :] + rng.normal(0, 12, size=(len(y), size, size, 3))
        return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.uint8)

    x_train, y_train = split(per_class_train)
    x_test, y_test = split(per_class_test)
    np.savez(
        path,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        class_names=np.array([f"c{i}" for i in range(n_classes)]),
        y_train_dist=(y_train % 3).astype(np.uint8),
        y_test_dist=(y_test % 3).astype(np.uint8),
        dist_class_names=np.array(["near", "mid", "far"]),
        n_objects_train=(y_train + 3).astype(np.int64),
        n_objects_test=(y_test + 3).astype(np.int64),
    )
    return path


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    return write_tiny_npz(tmp_path / "tiny.npz")
