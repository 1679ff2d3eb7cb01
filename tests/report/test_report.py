"""`openjepa report`: one self-contained HTML file, every figure inlined, opened in headless Chromium."""

from __future__ import annotations

import base64
import csv
import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image

from openjepa.cli.main import main
from openjepa.config import load_config, recipe_path, save_config
from openjepa.interop import infer_encoder_arch, save_encoder_safetensors
from openjepa.models import VisionTransformer
from openjepa.report import CSP, png_data_uri, render_html
from openjepa.train.monitor import METRIC_COLUMNS

SECTIONS = ("summary", "curves", "masks", "pca", "retrieval", "knn", "collapse")


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A run folder as pretraining leaves it: an encoder checkpoint, metrics.csv and params-ijepa.yaml."""
    folder = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    enc = VisionTransformer(img_size=32, patch_size=4, embed_dim=192, depth=2, num_heads=3)
    save_encoder_safetensors(enc.state_dict(), infer_encoder_arch(enc.state_dict(), num_heads=3),
                             folder / "encoder.safetensors", which="target")
    save_config(load_config(recipe_path("demo")), folder / "params-ijepa.yaml")
    with open(folder / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
        w.writeheader()
        for s in range(1, 41):
            row = {"step": s, "epoch": 1 + s // 20, "loss": 0.5 / s ** 0.3, "lr": 1e-3 * min(1, s / 10),
                   "wd": 0.04, "momentum": 0.996 + 1e-4 * s, "imgs_per_s": 100}
            if s % 10 == 0:
                row.update(target_std=0.8, rankme=30.0 + s)
            w.writerow(row)
    return folder


@pytest.fixture(scope="module")
def report(run_folder, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("report") / "report.html"
    rc = main(["report", "--checkpoint", str(run_folder / "encoder.safetensors"), "--data", "shapes:160",
               "--out", str(out), "--device", "cpu", "--max-train", "160", "--max-test", "40", "--queries", "3",
               "--k", "5", "--images", "4", "--strict", "--no-progress"])
    assert rc == 0
    return out, out.read_text(encoding="utf-8")


def test_report_is_self_contained(report):
    path, page = report
    assert page.startswith("<!DOCTYPE html>")
    for anchor in SECTIONS:
        assert f'<section id="{anchor}">' in page
    srcs = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert len(srcs) == 5  # curves, masks, PCA, retrieval, confusion matrix
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            im.verify()
    # nothing outside the file: no scripts, style sheets, frames, fonts or remote URLs
    assert not re.search(r"<(script|link|iframe|object|embed)\b", page, re.I)
    assert not re.search(r"(src|href)=\"(?!data:|#)", page)
    assert "http://" not in page and "https://" not in page and "url(" not in page
    assert f'content="{CSP}"' in page


def test_report_content(report):
    _, page = report
    assert "weighted kNN top-1" in page and "RankMe" in page and "target feature std" in page
    assert "last RankMe logged during training" in page  # read from metrics.csv
    assert "mask settings of params-ijepa.yaml" in page
    assert "could not draw" not in page
    assert re.search(r"<td>4</td><td class=\"num\">\d+</td>", page)  # per-class table: class "4" (4 shapes)


def test_render_html_escapes():
    page = render_html("<x>", "a & b", [("s", "<h>", "<p>ok</p>")])
    assert "&lt;x&gt;" in page and "a &amp; b" in page and "&lt;h&gt;" in page and "<p>ok</p>" in page
    with pytest.raises(ValueError):
        png_data_uri(b"GIF89a")


def test_report_without_run_folder(tmp_path, capsys):
    """A random encoder has no run folder: the curves section says so, the rest is drawn."""
    out = tmp_path / "r.html"
    rc = main(["report", "--checkpoint", "random:vit_tiny", "--img-size", "32", "--patch-size", "4", "--depth", "2",
               "--data", "shapes:60", "--out", str(out), "--device", "cpu", "--max-train", "60", "--max-test", "15",
               "--queries", "2", "--k", "3", "--images", "2", "--knn-k", "5", "--strict", "--no-progress"])
    assert rc == 0
    page = out.read_text()
    assert "No metrics.csv" in page and len(re.findall(r"<img ", page)) == 4  # all but the curves
    assert "kNN top-1" in capsys.readouterr().out


# ------------------------------------------------------------------------------------ Chromium

def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium); it is not "
                    "installed by the tests because that needs root")
    return exe


CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (im) { return !(im.complete && im.naturalWidth > 0 && im.naturalHeight > 0); });
  document.body.setAttribute('data-images', String(imgs.length));
  document.body.setAttribute('data-broken', String(bad.length));
});
</script>"""


def _browser(exe: str, tmp: Path, *args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    flags = ["--headless", "--disable-gpu", "--no-sandbox", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
             "--disable-dev-shm-usage", f"--user-data-dir={tmp / 'chromium-profile'}"]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=timeout)


def _rendered_images(exe: str, page: str, tmp: Path, name: str) -> tuple[int, int]:
    """(images, broken images) once Chromium has loaded the page (a check script is added to a copy)."""
    # The report's policy allows no script at all; the copy allows just this inline one.
    checked = page.replace(CSP, CSP + "; script-src 'unsafe-inline'").replace("</body>", CHECK_SCRIPT + "</body>")
    copy = tmp / name
    copy.write_text(checked, encoding="utf-8")
    proc = _browser(exe, tmp, "--virtual-time-budget=10000", "--dump-dom", copy.as_uri())
    m = re.search(r'<body[^>]*data-images="(\d+)"[^>]*data-broken="(\d+)"', proc.stdout)
    assert m, f"Chromium did not run the check (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return int(m.group(1)), int(m.group(2))


def test_report_renders_in_headless_chromium(report, tmp_path):
    exe = _chromium()
    path, page = report
    n, broken = _rendered_images(exe, page, tmp_path, "checked.html")
    assert (n, broken) == (5, 0)
    # the checker does see a broken image
    bad = page.replace("</main>", '<img src="data:image/png;base64,iVBORw0KGgoAAAAA" alt="broken"></main>')
    assert _rendered_images(exe, bad, tmp_path, "control.html") == (6, 1)
    # the report itself, as written: a screenshot of the page (kept under the test's tmp folder)
    shot = tmp_path / "report.png"
    proc = _browser(exe, tmp_path, "--window-size=1280,3000", "--hide-scrollbars", f"--screenshot={shot}",
                    path.as_uri())
    assert shot.is_file(), proc.stderr[-2000:]
    with Image.open(shot) as im:
        assert im.size == (1280, 3000)
        lo, hi = im.convert("L").getextrema()
        assert hi - lo > 100  # not a blank page
    assert "Refused to" not in proc.stderr  # the content-security policy blocked nothing
