"""kNN-vs-time figure of bench/quality.py runs."""

from __future__ import annotations

import pytest
from PIL import Image

from openjepa.viz import plot_knn_curves


def test_plot_knn_curves__writes_a_png_with_one_line_per_run(tmp_path):
    curves = {
        "a": [{"epoch": 0, "minutes": 0.0, "knn_top1": 0.2}, {"epoch": 1, "minutes": 3.1, "knn_top1": 0.3}],
        "b": [{"epoch": 0, "minutes": 0.0, "knn_top1": 0.25}],
    }
    out = plot_knn_curves(curves, tmp_path / "k.png", floors={"chance": 0.1})
    with Image.open(out) as im:
        assert im.size[0] > 300 and im.size[1] > 200


@pytest.mark.parametrize("curves", [{}, {"a": []}])
def test_plot_knn_curves__refuses_empty_input(curves, tmp_path):
    with pytest.raises(ValueError):
        plot_knn_curves(curves, tmp_path / "k.png")
    assert not (tmp_path / "k.png").exists()
