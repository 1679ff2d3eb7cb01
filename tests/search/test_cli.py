"""`openjepa index` / `openjepa similar` end to end with a small random ViT (mechanics, not retrieval quality)."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from openjepa.cli.main import main
from openjepa.search import Index

from ._images import source_image, write_near_duplicates

ENC = ["--checkpoint", "random:vit_tiny", "--img-size", "32", "--patch-size", "4", "--depth", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    groups = write_near_duplicates(root / "imgs", n_sources=3)
    (root / "imgs" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return root, groups


def run(capsys, *argv: str) -> tuple[int, str]:
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


def test_index_update_refuse_and_similar(built, capsys):
    root, groups = built
    out = root / "imgs.index"
    rc, text = run(
        capsys, "index", *ENC, "--images", str(root / "imgs"), "--out", str(out), "--workers", "0", "--no-progress"
    )
    assert rc == 0, text
    assert "12 added, 0 changed, 0 unchanged, 0 removed, 1 unreadable skipped" in text
    assert "corrupt.png" in text
    index = Index.load(out)
    assert len(index) == 12 and index.dim == 192 and index.meta["encoder"]["source"] == "random:vit_tiny"

    # adding images: only the new ones are embedded
    Image.fromarray(source_image(40)).save(root / "imgs" / "added.png")
    rc, text = run(
        capsys, "index", *ENC, "--images", str(root / "imgs"), "--out", str(out), "--workers", "0", "--no-progress"
    )
    assert rc == 0, text
    assert "1 added, 0 changed, 12 unchanged, 0 removed, 1 unreadable skipped" in text
    assert len(Index.load(out)) == 13

    # another checkpoint (other patch size: other weights): refused with a clear one-line message
    other = [
        "--checkpoint",
        "random:vit_tiny",
        "--img-size",
        "32",
        "--patch-size",
        "8",
        "--depth",
        "2",
        "--device",
        "cpu",
    ]
    rc, text = run(capsys, "index", *other, "--images", str(root / "imgs"), "--out", str(out), "--no-progress")
    assert rc == 2
    assert "fingerprint" in text and "not comparable" in text and len(text.strip().splitlines()) == 1
    assert len(Index.load(out)) == 13  # untouched

    # similar: a query image, scores printed, grid drawn; the query itself is skipped by default
    query = next(iter(groups))
    grid = root / "grid.png"
    rc, text = run(
        capsys, "similar", "--index", str(out), "--query", query, "--k", "4", "--out", str(grid), "--device", "cpu"
    )
    assert rc == 0, text
    lines = [ln for ln in text.splitlines() if re.match(r"\s+\d+\s+-?\d\.\d{4}\s+\S", ln)]
    assert len(lines) == 4 and query not in text.split("query 1/1:")[1].split("\n", 1)[1]
    scores = [float(ln.split()[1]) for ln in lines]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    with Image.open(grid) as im:
        assert im.size[0] > 400 and im.size[1] > 100

    # --include-self: an indexed query finds itself first, with cosine 1
    rc, text = run(
        capsys, "similar", "--index", str(out), "--query", query, "--k", "2", "--include-self", "--device", "cpu"
    )
    first = next(ln for ln in text.splitlines() if ln.strip().startswith("1 "))
    assert rc == 0 and float(first.split()[1]) == pytest.approx(1.0, abs=1e-4) and first.split()[2] in query

    # a folder of queries (with the corrupt file skipped and reported)
    rc, text = run(
        capsys, "similar", "--index", str(out), "--query", str(root / "imgs"), "--k", "3", "--device", "cpu", "--center"
    )
    assert rc == 0 and "query 13/13" in text and "skipped unreadable query" in text


def test_similar_errors(built, capsys, tmp_path):
    root, _ = built
    rc, text = run(capsys, "similar", "--index", str(tmp_path / "nope.index"), "--query", str(root))
    assert rc == 2 and "index not found" in text
    Image.new("RGB", (8, 8)).save(tmp_path / "not-an-index.png")
    rc, text = run(capsys, "similar", "--index", str(tmp_path / "not-an-index.png"), "--query", str(root))
    assert rc == 2 and "not a readable index" in text
