"""`openjepa data list|get` and named datasets through the commands, offline: tiny official-layout
archives from a local mirror, and the one-line instruction when there is no network."""

from __future__ import annotations

import json

import pytest

from openjepa.cli.main import main
from openjepa.data import catalog
from openjepa.search import Index

from ..data._archives import (
    NetworkCalls,
    build_mirror,
    cache_files,
    make_cifar10,
    make_imagenet_tree,
    md5,
    offline_cache,
    set_md5,
)
from ..reliability._tiny import TINY as TINY_RUN
from .conftest import TINY

OFFICIAL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


@pytest.fixture(autouse=True)
def network(monkeypatch, tmp_path) -> NetworkCalls:
    """Every test: an empty cache in tmp_path/cache, no mirror, no network (local files and loopback only)."""
    return offline_cache(monkeypatch, tmp_path)


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    folder = tmp_path / "mirror"
    monkeypatch.setenv(catalog.MIRROR_ENV, str(folder))
    return folder


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _rows(out: str) -> dict[str, str]:
    return {line.split()[0]: line for line in out.splitlines()[2:] if line.split()[0] in catalog.DATASETS}


def test_data_list_then_get_then_list(tmp_path, capsys, monkeypatch, mirror):
    rc, out, _ = _run(capsys, "data", "list")
    assert rc == 0 and str(tmp_path / "cache") in out.splitlines()[0] and "imagenet:FOLDER" in out
    rows = _rows(out)
    assert set(rows) == set(catalog.DATASETS) and all("not cached" in r for r in rows.values())
    build_mirror("cifar10", mirror, monkeypatch)
    build_mirror("mnist", mirror, monkeypatch)
    rc, out, _ = _run(capsys, "-q", "data", "get", "CIFAR10", "mnist")
    assert rc == 0 and out.splitlines() == [
        f"cifar10: {tmp_path / 'cache' / 'cifar10.npz'}",
        f"mnist: {tmp_path / 'cache' / 'mnist.npz'}",
    ]
    rows = _rows(_run(capsys, "data", "list")[1])
    assert " ready " in rows["cifar10"] and " ready " in rows["mnist"] and "not cached" in rows["stl10"]


def test_data_get__an_unknown_name_is_one_line_and_fetches_nothing(tmp_path, capsys, network):
    rc, _, err = _run(capsys, "data", "get", "cifar10", "cifar1000")
    assert rc == 2 and err.strip().splitlines() == [
        "openjepa data: error: unknown dataset 'cifar1000'; known: cifar10, cifar100, stl10, imagenette, mnist, "
        "fashion-mnist (ImageNet, which needs a login to download: --data imagenet:FOLDER)"
    ]
    assert network.opened == [] and cache_files(tmp_path) == []


def test_eval__offline_stops_in_one_line_then_works_from_the_file_put_by_hand(tmp_path, capsys, monkeypatch, network):
    argv = ["eval", "knn", "--checkpoint", "random:vit_tiny", "--patch-size", "4", "--img-size", "32", "--data"]
    rc, out, err = _run(capsys, *argv, "cifar10")
    folder = tmp_path / "cache" / "downloads" / "cifar10"
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1, err  # not even the encoder's log line
    line = err.strip()
    assert line.startswith("openjepa eval: error: cannot download cifar-10-python.tar.gz")
    assert f"fetch {OFFICIAL} by hand into {folder}/ ($OPENJEPA_DATA/downloads/cifar10/)" in line
    assert network.refused == [OFFICIAL]
    path, _ = make_cifar10(folder)  # what the user fetches by hand (here: the tiny archive)
    set_md5(monkeypatch, "cifar10", path.name, md5(path))
    rc, out, err = _run(
        capsys, "-q", *argv, "cifar10", "--depth", "1", "--no-progress", "--out", str(tmp_path / "r.json")
    )
    assert rc == 0, err
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["data"] == "cifar10" and (res["n_train"], res["n_test"]) == (20, 6)
    assert network.refused == [OFFICIAL]


def test_pretrain__stl10_by_name_reads_the_unlabelled_images(tmp_path, capsys, monkeypatch, mirror):
    build_mirror("stl10", mirror, monkeypatch)
    sets = [a for item in [*TINY_RUN, "data.batch_size=6", "optimization.epochs=1"] for a in ("--set", item)]
    rc, out, err = _run(
        capsys, "-q", "pretrain", "--no-progress", "--data", "stl10", "--out", str(tmp_path / "run"), *sets
    )
    assert rc == 0, err
    assert json.loads(out.strip().splitlines()[-1])["steps"] == 2  # (5 labelled + 7 unlabelled) / 6 per batch


def test_extract_and_report_accept_a_name_index_refuses_it(tmp_path, capsys, monkeypatch, mirror):
    build_mirror("cifar10", mirror, monkeypatch)
    rc, _, err = _run(capsys, "-q", "extract", *TINY, "--data", "cifar10", "--out", str(tmp_path / "f.npz"))
    assert rc == 0, err
    rc, _, err = _run(capsys, "-q", "report", *TINY, "--data", "cifar10", "--out", str(tmp_path / "r.html"), "--k", "3")
    assert rc == 0, err
    rc, _, err = _run(capsys, "-q", "index", *TINY, "--images", "cifar10", "--out", str(tmp_path / "x.index"))
    assert rc == 2 and "cannot index 'cifar10': a named dataset holds no image files" in err


def test_imagenet_folder__eval_on_val_and_index_its_files(tmp_path, capsys):
    root = make_imagenet_tree(tmp_path / "in1k")
    rc, _, err = _run(
        capsys, "-q", "eval", "knn", *TINY, "--data", f"imagenet:{root}", "--out", str(tmp_path / "r.json")
    )
    assert rc == 0, err
    res = json.loads((tmp_path / "r.json").read_text())
    assert (res["n_train"], res["n_test"]) == (6, 4)  # train/ and val/
    out = tmp_path / "x.index"
    rc, _, err = _run(capsys, "-q", "index", *TINY, "--workers", "0", "--images", f"imagenet:{root}", "--out", str(out))
    assert rc == 0, err
    assert len(Index.load(out)) == 10
