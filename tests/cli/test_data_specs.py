"""One dataset grammar for every command: the same specs (an image folder, a .npz, tar shards, shapes:N)
through `pretrain`, `eval`, `extract`, `report` and `index`, called in-process on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from openjepa.cli.main import main
from openjepa.data.shards import write_shards
from openjepa.search import Index

from ..reliability._tiny import TINY as TINY_RUN
from .conftest import TINY, write_tiny_npz

KINDS = ("folder", "npz", "shards", "shapes")
SIZES = {"folder": (12, 6), "npz": (56, 21), "shards": (12, 6), "shapes": (24, 6)}  # (train, test) images


@pytest.fixture(scope="module")
def specs(tmp_path_factory) -> dict[str, str]:
    """The four specs: folder and shards hold the same 16-px images (train/ and val/ of 2 classes)."""
    root = tmp_path_factory.mktemp("specs")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 6), ("val", 3)):
        images, labels = [], []
        for c in range(2):
            folder = root / "imgs" / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                img = np.clip(rng.normal(60 + 120 * c, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{i}.png")
                images.append(img)
                labels.append(c)
        write_shards(images, labels, root / "shards" / split, per_shard=5, fmt="png")
    return {
        "folder": str(root / "imgs"),
        "npz": str(write_tiny_npz(root / "tiny.npz")),
        "shards": f"shards:{root / 'shards'}",
        "shapes": "shapes:24",
    }


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["-q", *argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.mark.parametrize("kind", KINDS)
def test_pretrain_accepts_each_spec(tmp_path, capsys, specs, kind):
    sets = [a for item in [*TINY_RUN, "optimization.max_steps=2"] for a in ("--set", item)]
    rc, out, err = _run(
        capsys, "pretrain", "--no-progress", "--data", specs[kind], "--out", str(tmp_path / "run"), *sets
    )
    assert rc == 0, err
    assert json.loads(out.strip().splitlines()[-1])["steps"] == 2


@pytest.mark.parametrize("kind", KINDS)
def test_eval_and_extract_accept_each_spec(tmp_path, capsys, specs, kind):
    n_train, n_test = SIZES[kind]
    rc, _, err = _run(capsys, "eval", "knn", *TINY, "--data", specs[kind], "--out", str(tmp_path / "r.json"))
    assert rc == 0, err
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["data"] == specs[kind] and (res["n_train"], res["n_test"]) == (n_train, n_test)
    rc, _, err = _run(capsys, "extract", *TINY, "--data", specs[kind], "--out", str(tmp_path / "f.npz"))
    assert rc == 0, err
    with np.load(tmp_path / "f.npz") as f:
        assert f["train_features"].shape == (n_train, 192) and f["test_labels"].shape == (n_test,)


@pytest.mark.parametrize("kind", KINDS)
def test_report_accepts_each_spec(tmp_path, capsys, specs, kind):
    out = tmp_path / "r.html"
    rc, printed, err = _run(
        capsys,
        "report",
        *TINY,
        "--data",
        specs[kind],
        "--out",
        str(out),
        "--device",
        "cpu",
        "--queries",
        "2",
        "--k",
        "3",
        "--images",
        "2",
        "--knn-k",
        "5",
        "--strict",
    )
    assert rc == 0, err
    assert "kNN top-1" in printed and specs[kind] in out.read_text()


@pytest.mark.parametrize("kind", KINDS)
def test_index_embeds_folder_specs_and_refuses_specs_without_image_files(tmp_path, capsys, specs, kind):
    out = tmp_path / "x.index"
    argv = ["index", *TINY, "--workers", "0", "--out", str(out), "--images"]
    if kind == "folder":
        for spec in (specs[kind], f"folder:{specs[kind]}"):
            rc, _, err = _run(capsys, *argv, spec)
            assert rc == 0, err
        assert len(Index.load(out)) == 18  # train and val images, searched recursively
        return
    rc, _, err = _run(capsys, *argv, specs[kind])
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("openjepa index: error: cannot index")
    assert "holds no image files" in lines[0] and not out.exists()


@pytest.mark.parametrize("command", ["pretrain", "eval", "extract", "report", "index"])
@pytest.mark.parametrize("spec", ["shapes:0", "{tmp}/no_such_folder", "imagenet"])
def test_bad_spec_is_the_same_one_line_error_everywhere(tmp_path, capsys, command, spec):
    spec = spec.format(tmp=tmp_path)
    out = str(tmp_path / "out")
    argv = {
        "pretrain": ["pretrain", "--data", spec, "--out", out, *[a for s in TINY_RUN for a in ("--set", s)]],
        "eval": ["eval", "knn", *TINY, "--data", spec],
        "extract": ["extract", *TINY, "--data", spec, "--out", out],
        "report": ["report", *TINY, "--data", spec, "--out", out],
        "index": ["index", *TINY, "--images", spec, "--out", out],
    }[command]
    if command == "index" and "no_such_folder" in spec:
        argv[argv.index(spec)] = f"folder:{spec}"  # a bare missing path is left to the file scan
    rc, _, err = _run(capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"openjepa {command}: error:")
    assert any(why in lines[0] for why in ("bad dataset spec", "data folder not found", "no such image or folder"))
    assert not Path(out).exists()


def test_prefixes_are_case_insensitive_for_every_command(tmp_path, capsys, specs):
    upper = specs["shards"].replace("shards:", "SHARDS:", 1)
    rc, _, err = _run(capsys, "eval", "knn", *TINY, "--data", upper, "--out", str(tmp_path / "r.json"))
    assert rc == 0, err
    sets = [a for item in [*TINY_RUN, "optimization.max_steps=1"] for a in ("--set", item)]
    rc, _, err = _run(capsys, "pretrain", "--no-progress", "--data", upper, "--out", str(tmp_path / "run"), *sets)
    assert rc == 0, err
    rc, _, err = _run(capsys, "extract", *TINY, "--data", "Shapes:8", "--out", str(tmp_path / "f.npz"))
    assert rc == 0, err


def test_encoder_sources_share_one_grammar(tmp_path, capsys, specs):
    upper = ["--checkpoint", "RANDOM:vit_tiny", *TINY[2:]]
    rc, _, err = _run(capsys, "eval", "knn", *upper, "--data", specs["npz"], "--out", str(tmp_path / "r.json"))
    assert rc == 0, err
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["encoder"] == "random" and res["checkpoint"] == "RANDOM:vit_tiny"
    rc, _, err = _run(
        capsys,
        "report",
        "--checkpoint",
        "pixels",
        "--data",
        specs["npz"],
        "--out",
        str(tmp_path / "r.html"),
        "--no-progress",
    )
    assert rc == 2 and "raw-pixel baseline, not an encoder" in err
