"""`openjepa report`: one self-contained HTML file, every figure inlined, opened in headless Chromium."""

from __future__ import annotations

import base64
import csv
import io
import os
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from openjepa.cli.main import main
from openjepa.config import load_config, recipe_path, save_config
from openjepa.interop import infer_encoder_arch, save_encoder_safetensors
from openjepa.models import VisionTransformer
from openjepa.report import CSP, png_data_uri, render_html
from openjepa.report.content import Section
from openjepa.report.figures import Figure
from openjepa.train.monitor import METRIC_COLUMNS

from ._chromium import Chromium, chromium_executable

SECTIONS = ("summary", "curves", "masks", "pca", "retrieval", "knn", "collapse")


def _png_1px() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    return buf.getvalue()


PNG_1PX = _png_1px()


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A run folder as pretraining leaves it: an encoder checkpoint, metrics.csv and params-ijepa.yaml."""
    folder = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    enc = VisionTransformer(img_size=32, patch_size=4, embed_dim=192, depth=2, num_heads=3)
    save_encoder_safetensors(
        enc.state_dict(),
        infer_encoder_arch(enc.state_dict(), num_heads=3),
        folder / "encoder.safetensors",
        which="target",
    )
    save_config(load_config(recipe_path("demo")), folder / "params-ijepa.yaml")
    with open(folder / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
        w.writeheader()
        for s in range(1, 41):
            row = {
                "step": s,
                "epoch": 1 + s // 20,
                "loss": 0.5 / s**0.3,
                "lr": 1e-3 * min(1, s / 10),
                "wd": 0.04,
                "momentum": 0.996 + 1e-4 * s,
                "imgs_per_s": 100,
            }
            if s % 10 == 0:
                row.update(target_std=0.8, rankme=30.0 + s)
            w.writerow(row)
    return folder


@pytest.fixture(scope="module")
def report(run_folder, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("report") / "report.html"
    rc = main(
        [
            "report",
            "--checkpoint",
            str(run_folder / "encoder.safetensors"),
            "--data",
            "shapes:160",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--max-train",
            "160",
            "--max-test",
            "40",
            "--queries",
            "3",
            "--k",
            "5",
            "--images",
            "4",
            "--strict",
            "--no-progress",
        ]
    )
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
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # written atomically: no temp file left


def test_report_content(report):
    _, page = report
    assert "weighted kNN top-1" in page and "RankMe" in page and "target feature std" in page
    assert "last RankMe logged during training" in page  # read from metrics.csv
    assert "mask settings of params-ijepa.yaml" in page
    assert "could not draw" not in page
    assert re.search(r"<td>4</td><td class=\"num\">\d+</td>", page)  # per-class table: class "4" (4 shapes)


def test_render_html_escapes_every_value():
    figure = Figure(png_data_uri(PNG_1PX), 'a "quoted" <alt>')
    sections = [
        Section("s<1>", "<h>", "summary", [("<k>", "<b>bold</b>"), ("n", 0.123456)]),
        Section("p", "PCA", "pca", figure),
        Section("e", "Err", "masks", error="<script>alert(1)</script>"),
    ]
    page = render_html("<x>", "a & b", sections)
    assert page.startswith("<!DOCTYPE html>") and page.count("<section ") == 3
    assert "<title>&lt;x&gt;</title>" in page and "<p>a &amp; b</p>" in page and "<h2>&lt;h&gt;</h2>" in page
    assert 'id="s&lt;1&gt;"' in page and 'href="#s&lt;1&gt;"' in page
    assert "<td>&lt;k&gt;</td><td>&lt;b&gt;bold&lt;/b&gt;</td>" in page and "<td>0.1235</td>" in page
    assert 'alt="a &#34;quoted&#34; &lt;alt&gt;"' in page and f'src="{figure.uri}"' in page
    assert "could not draw this section: &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page and "<b>" not in page
    assert f'content="{CSP}"' in page
    with pytest.raises(ValueError, match="unknown report section kind"):
        render_html("t", "s", [Section("x", "X", "nope", None)])
    with pytest.raises(ValueError):
        png_data_uri(b"GIF89a")


def test_a_failing_section_shows_its_error_unless_strict(monkeypatch):
    from openjepa.report import data

    def broken(ctx):
        raise RuntimeError("no <collator>")

    monkeypatch.setattr(data, "summary_rows", lambda ctx: [("checkpoint", "x")])
    monkeypatch.setattr(
        data, "SECTIONS", (("pca", "PCA", lambda ctx: Figure(png_data_uri(PNG_1PX), "pca")), ("masks", "Masks", broken))
    )
    sections, errors = data.build_sections(ctx=None)
    assert [s.anchor for s in sections] == ["summary", "pca", "masks"]
    assert errors == {"masks": "RuntimeError: no <collator>"} and sections[2].content is None
    page = render_html("t", "s", sections)
    assert "could not draw this section: RuntimeError: no &lt;collator&gt;" in page and page.count("<img ") == 1
    with pytest.raises(RuntimeError, match="collator"):
        data.build_sections(ctx=None, strict=True)


def test_report_without_run_folder(tmp_path, capsys):
    """A random encoder has no run folder: the curves section says so, the rest is drawn."""
    out = tmp_path / "r.html"
    rc = main(
        [
            "report",
            "--checkpoint",
            "random:vit_tiny",
            "--img-size",
            "32",
            "--patch-size",
            "4",
            "--depth",
            "2",
            "--data",
            "shapes:60",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--max-train",
            "60",
            "--max-test",
            "15",
            "--queries",
            "2",
            "--k",
            "3",
            "--images",
            "2",
            "--knn-k",
            "5",
            "--strict",
            "--no-progress",
        ]
    )
    assert rc == 0
    page = out.read_text()
    assert "No metrics.csv" in page and len(re.findall(r"<img ", page)) == 4  # all but the curves
    assert "kNN top-1" in capsys.readouterr().out


# ------------------------------------------------------------------------------------ Chromium

# Every <img>, once decoded: [naturalWidth, naturalHeight, decoded]; then a short wait, so that
# late policy reports reach the log before the errors are read.
IMAGES_JS = """Promise.all(Array.from(document.images, im => im.decode().then(() => true, () => false)
  .then(ok => [im.naturalWidth, im.naturalHeight, ok])))
  .then(r => new Promise(done => setTimeout(() => done(r), 300)))"""


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    exe = chromium_executable()
    if exe is None:
        why = "headless Chromium is not installed (Debian: apt-get install -y chromium)"
        if os.environ.get("OPENJEPA_REQUIRE_BROWSER"):  # .ci/run installs it: a missing browser is a failure there
            pytest.fail(why)
        pytest.skip(why)
    with Chromium(exe, tmp_path_factory.mktemp("chromium-profile")) as browser:
        yield browser


def test_report_renders_in_headless_chromium(report, chromium):
    path, _ = report
    page = chromium.open(path.as_uri())  # the file as written, nothing injected
    images = chromium.evaluate(page, IMAGES_JS)
    assert len(images) == 5
    for width, height, decoded in images:
        assert decoded and width > 0 and height > 0
    assert chromium.errors(page) == []  # no console error, exception or blocked load
    assert chromium.evaluate(page, "document.querySelectorAll('main > section').length") == len(SECTIONS)
    with Image.open(io.BytesIO(chromium.screenshot(page))) as shot:
        assert shot.size == (1280, 2000)
        lo, hi = shot.convert("L").getextrema()
        assert hi - lo > 100  # not a blank page


def test_headless_chromium_check_sees_broken_images_and_errors(report, chromium, tmp_path):
    """The control: the same checks do catch a broken image, a blocked remote image and a blocked script."""
    _, page_html = report
    bad = page_html.replace(
        "</main>",
        '<img src="data:image/png;base64,iVBORw0KGgoAAAAA" alt="broken">'
        '<img src="https://example.invalid/x.png" alt="remote">'
        "<script>console.error('boom')</script></main>",
    )
    (tmp_path / "bad.html").write_text(bad, encoding="utf-8")
    page = chromium.open((tmp_path / "bad.html").as_uri())
    images = chromium.evaluate(page, IMAGES_JS)
    assert len(images) == 7 and [im[0] > 0 and im[2] for im in images].count(False) == 2
    errors = chromium.errors(page)
    assert any("example.invalid" in e and "Content Security Policy" in e for e in errors), errors
    assert any("inline script" in e and "Content Security Policy" in e for e in errors), errors
    (tmp_path / "script.html").write_text("<!DOCTYPE html><p>x</p><script>console.error('boom')</script>")
    page = chromium.open((tmp_path / "script.html").as_uri())
    assert chromium.evaluate(page, IMAGES_JS) == []
    assert any("boom" in e for e in chromium.errors(page))
