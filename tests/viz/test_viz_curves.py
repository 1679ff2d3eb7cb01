"""Training-curve figure: CSV parsing (required/optional columns, empty cells) and the PNG itself."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from openjepa.viz import ema_smooth, plot_training_curves, read_metrics_csv

BASE = ["step", "epoch", "loss", "lr", "wd", "momentum", "imgs_per_s"]


def _write_csv(path: Path, columns: list[str], n: int = 40, drop: set[str] = frozenset()) -> Path:
    rows = [",".join(c for c in columns if c not in drop)]
    for i in range(n):
        vals = {
            "step": i * 10,
            "epoch": i // 10,
            "loss": 1.0 / (1 + i) + 0.05,
            "lr": 1e-3 * min(1, i / 10),
            "wd": 0.04 + 0.0001 * i,
            "momentum": 0.996 + 0.0001 * i,
            "imgs_per_s": 500 + i,
            # collapse indicators / kNN are only measured every 10 steps: empty cells otherwise
            "target_std": 0.5 if i % 10 == 0 else "",
            "rankme": 100 + i if i % 10 == 0 else "",
            "knn_top1": 0.1 * (i // 10) if i % 10 == 9 else "",
        }
        rows.append(",".join(str(vals[c]) for c in columns if c not in drop))
    path.write_text("\n".join(rows) + "\n")
    return path


def test_curves_required_columns_only(tmp_path: Path) -> None:
    csv_path = _write_csv(tmp_path / "m.csv", BASE)
    out = plot_training_curves(csv_path, tmp_path / "sub" / "curves.png")
    assert out == tmp_path / "sub" / "curves.png" and out.exists()
    with Image.open(out) as im:
        im.load()
        w, h = im.size
    assert 800 <= w <= 3000 and 500 <= h <= 3000


def test_curves_with_optional_columns_and_empty_cells(tmp_path: Path) -> None:
    csv_path = _write_csv(tmp_path / "m.csv", BASE + ["target_std", "rankme", "knn_top1"])
    cols = read_metrics_csv(csv_path)
    assert np.isnan(cols["knn_top1"][0]) and math.isclose(cols["knn_top1"][9], 0.0)
    assert np.isfinite(cols["target_std"]).sum() == 4
    out_small = plot_training_curves(_write_csv(tmp_path / "b.csv", BASE), tmp_path / "base.png")
    out_full = plot_training_curves(csv_path, tmp_path / "full.png")
    with Image.open(out_small) as a, Image.open(out_full) as b:
        # the optional panels add a row of subplots, so the figure gets taller
        assert b.size[1] > a.size[1] and b.size[0] == a.size[0]


def test_curves_spaces_in_header_and_zero_loss(tmp_path: Path) -> None:
    p = tmp_path / "m.csv"
    p.write_text(
        "step, epoch, loss, lr, wd, momentum, imgs_per_s\n0, 0, 0.0, 0, 0.04, 0.996, \n"
        "10, 0, 0.5, 1e-4, 0.04, 0.997, 300\n"
    )
    assert plot_training_curves(p, tmp_path / "c.png").exists()  # zero loss: linear axis, no crash


def test_curves_missing_required_column_raises(tmp_path: Path) -> None:
    csv_path = _write_csv(tmp_path / "m.csv", BASE, drop={"momentum"})
    with pytest.raises(ValueError, match="momentum"):
        plot_training_curves(csv_path, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_curves_non_numeric_cell_raises(tmp_path: Path) -> None:
    p = tmp_path / "m.csv"
    p.write_text(",".join(BASE) + "\n0,0,abc,0,0,0,0\n")
    with pytest.raises(ValueError, match="loss"):
        read_metrics_csv(p)


def test_ema_smooth_skips_nan_and_is_unbiased() -> None:
    x = np.array([2.0, 2.0, np.nan, 2.0])
    y = ema_smooth(x, window=10)
    assert np.isnan(y[2]) and np.allclose(y[[0, 1, 3]], 2.0)  # constant in -> constant out, no ramp-up
    noisy = np.random.default_rng(0).normal(size=2000)
    assert ema_smooth(noisy, 50)[100:].std() < 0.5 * noisy.std()
