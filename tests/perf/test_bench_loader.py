"""bench/loader.py runs end to end on tiny generated data and prints its one JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_loader__prints_one_json_line_with_every_configuration(tmp_path):
    tiny = "--images 16 --size 64x48 --crop 32 --patch-size 4 --npz-side 32 --npz-crop 32 --npz-patch-size 4"
    args = [*tiny.split(), "--batch-size", "4", "--batches", "2", "--workers", "0", "--rounds", "1"]
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "loader.py"), *args, "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=240,
    ).stdout.strip()
    assert len(out.splitlines()) == 1
    res = json.loads(out)
    assert {"cpu", "cpu_flags", "torch", "workers", "jpeg_speedup_per_worker", "cores_to_feed_h200_vit_h14"} <= set(res)
    assert set(res["results"]["jpeg"]) == {"baseline", "openjepa", "plain_decode", "raw_folder"}
    assert set(res["results"]["npz"]) == {"baseline", "openjepa"}
    for case in res["results"].values():
        for runs in case.values():
            assert runs["0"]["imgs_per_s"] > 0 and runs["0"]["first_batch_s"] >= 0
    assert res["raw_conversion"]["disk_vs_jpeg"] > 1 and res["jpeg"]["size"] == [64, 48]
