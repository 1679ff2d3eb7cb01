"""`openjepa demo` end to end on a tiny budget: pretrain, probe both encoders, write results and figures."""

from __future__ import annotations

import json

import pytest

from openjepa.cli.main import main


@pytest.mark.slow
def test_demo__tiny_budget_writes_table_results_and_plots(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(
        [
            "demo",
            "--minutes",
            "0.3",
            "--out",
            str(out),
            "--no-progress",
            "--set",
            "meta.depth=1",
            "--set",
            "data.dataset=objects:160",
            "--set",
            "meta.pred_depth=1",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "| I-JEPA (target encoder) |" in printed and "| random init |" in printed
    summary = json.loads((out / "results.json").read_text())
    rows = {(r["encoder"], r["task"]): r for r in summary["results"]}
    assert set(rows) == {(e, t) for e in ("I-JEPA (target encoder)", "random init") for t in ("linear", "knn")}
    assert all(0.0 <= r["top1"] <= 1.0 and r["n_test"] == 40 for r in rows.values())
    assert summary["pretrain_steps"] >= 1
    assert summary["pretrain_data"] == summary["probe_data"] == "objects:160"  # below the cap: probed as pretrained
    figures = ("retrieval_learned.png", "retrieval_random.png", "predictions.png", "curves.png", "masks.png", "pca.png")
    for name in (*figures, "results.md", "params-ijepa.yaml"):
        assert (out / name).stat().st_size > 0, name
    assert "where to look:" in printed
    for name in figures:  # each figure is named with what it shows
        assert str(out / name) in printed and summary["figures"][name]["shows"]
    for name in ("retrieval_learned.png", "retrieval_random.png"):
        assert 0.0 <= summary["figures"][name]["neighbours_with_the_query_label"] <= 1.0
