"""Named datasets, offline end to end: tiny archives in each official layout served from a local mirror
(a folder, a file:// URL, a loopback HTTP server), md5-checked against the catalog (its checksums
replaced by the tiny archives'), converted once into the cache and reused; checksum failures, partial
downloads and corrupt archives leave the cache clean; with no network, one line says what to fetch."""

from __future__ import annotations

import functools
import http.server
import io
import os
import pickle
import re
import shutil
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from torch.utils.data import ConcatDataset

from openjepa.config import load_config, recipe_path
from openjepa.data import build_dataset, build_train_dataset, catalog, download, parse_data_spec
from openjepa.data.archives import READERS
from openjepa.data.build import fetch_data
from openjepa.data.download import ChecksumError, DownloadError
from openjepa.data.named import CorruptArchiveError, cache_state, prepare
from openjepa.data.spec import image_inputs

from ._archives import (
    CIFAR10_NAMES,
    MAKERS,
    NetworkCalls,
    build_mirror,
    cache_files,
    make_cifar10,
    make_imagenet_tree,
    md5,
    offline_cache,
    set_md5,
)


@pytest.fixture(autouse=True)
def network(monkeypatch, tmp_path) -> NetworkCalls:
    """Every test: an empty cache in tmp_path/cache, no mirror, no network (local files and loopback only)."""
    return offline_cache(monkeypatch, tmp_path)


@pytest.fixture
def mirror(tmp_path, monkeypatch) -> Path:
    """An empty mirror folder, set as $OPENJEPA_DATA_MIRROR."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    monkeypatch.setenv(catalog.MIRROR_ENV, str(folder))
    return folder


def _npz(name: str) -> dict[str, np.ndarray]:
    with np.load(catalog.output_path(catalog.lookup(name))) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist", "fashion-mnist", "stl10"])
def test_layouts__each_array_is_the_official_pixels_and_labels(tmp_path, mirror, monkeypatch, network, name):
    want = build_mirror(name, mirror, monkeypatch)
    entry = catalog.lookup(name)
    path = prepare(name)
    assert path == tmp_path / "cache" / entry.output
    got = _npz(name)
    for key in ("x_train", "y_train", "x_test", "y_test", "y_train_coarse", "y_test_coarse"):
        if key in want:
            assert got[key].dtype == np.uint8 and np.array_equal(got[key], want[key]), key
    if "class_names" in want:
        assert list(got["class_names"]) == list(want["class_names"])
    if name == "stl10":
        with np.load(catalog.unlabeled_path(entry)) as f:
            assert np.array_equal(f["x_train"], want["x_unlabeled"]) and set(f["y_train"]) == {-1}
    ds = build_dataset(name, split="test")
    img, label = ds[1]
    assert label == int(want["y_test"][1]) and np.array_equal(np.asarray(img)[..., 0], want["x_test"][1][..., 0])
    files = [f"downloads/{name}/{f.name}" for f in entry.files]
    outputs = [entry.output] + ([entry.unlabeled] if entry.unlabeled else [])
    assert cache_files(tmp_path) == sorted(files + outputs)  # no temporary file left anywhere
    assert cache_state(entry)[0] == "ready"


def test_reuse__a_cached_dataset_is_read_without_the_mirror_or_the_network(tmp_path, mirror, monkeypatch, network):
    build_mirror("cifar10", mirror, monkeypatch)
    first = prepare("cifar10")
    stamp = first.stat().st_mtime_ns
    shutil.rmtree(mirror)
    opened = len(network.opened)
    assert prepare("CIFAR10") == first and first.stat().st_mtime_ns == stamp  # not converted again
    assert len(build_dataset("cifar10", split="train")) == 20 and len(network.opened) == opened


def test_mirror__a_file_url_and_the_fetch_before_weights_load(tmp_path, mirror, monkeypatch, network):
    build_mirror("mnist", mirror, monkeypatch)
    monkeypatch.setenv(catalog.MIRROR_ENV, mirror.as_uri())
    spec = fetch_data("mnist")
    assert spec.kind == "named" and Path(spec.stat_path or "").is_file()
    assert all(url.startswith(mirror.as_uri() + "/mnist/") for url in network.opened)


def test_imagenette__centre_cropped_to_64px_shuffled_with_class_names(tmp_path, mirror, monkeypatch):
    want = build_mirror("imagenette", mirror, monkeypatch)
    prepare("imagenette")
    got = _npz("imagenette")
    assert got["x_train"].shape == (want["train"], 64, 64, 3) and got["x_test"].shape == (want["test"], 64, 64, 3)
    assert list(got["class_names"])[:2] == ["tench", "English springer"] and got["class_wnids"][0] == "n01440764"
    for x, y in zip(got["x_train"], got["y_train"]):  # each image is its class's flat colour (or grey, in RGB)
        mean = x.astype(float).mean((0, 1))
        assert np.abs(mean - np.array(want["colours"][y])).max() < 6 or (y == 3 and np.ptp(mean) < 1)
    assert sorted(np.bincount(got["y_train"])) == [2] * 10
    assert list(got["y_train"]) != sorted(got["y_train"])  # shuffled: prefixes hold every class


def test_stl10__pretraining_adds_the_unlabelled_images_evaluation_does_not(tmp_path, mirror, monkeypatch):
    build_mirror("stl10", mirror, monkeypatch)
    cfg = load_config(recipe_path("demo"), ["data.dataset=stl10", "data.crop_size=32"])
    train = build_train_dataset(cfg)
    assert isinstance(train.base, ConcatDataset) and len(train) == 5 + 7
    assert [train.base[i][1] for i in (4, 5, 11)][1:] == [-1, -1] and train.base[4][1] >= 0
    assert len(build_dataset("stl10", "train")) == 5 and len(build_dataset("stl10", "test")) == 4


def test_cifar100__coarse_labels_by_label_key(tmp_path, mirror, monkeypatch):
    want = build_mirror("cifar100", mirror, monkeypatch)
    ds = build_dataset("cifar100", split="train", label_key="coarse")
    assert ds.num_classes == 20 and list(ds.targets) == list(want["y_train_coarse"])


# ------------------------------------------------------------------------------ failures


def test_checksum__a_download_that_does_not_match_is_deleted_and_never_used(tmp_path, mirror, monkeypatch):
    build_mirror("cifar10", mirror, monkeypatch)
    set_md5(monkeypatch, "cifar10", "cifar-10-python.tar.gz", "0" * 32)
    with pytest.raises(ChecksumError) as err:
        prepare("cifar10")
    msg = str(err.value)
    assert "cifar-10-python.tar.gz" in msg and "0" * 32 in msg and "deleted" in msg and "\n" not in msg
    assert cache_files(tmp_path) == []


def test_checksum__a_wrong_file_put_by_hand_is_refused_kept_and_named(tmp_path, mirror, monkeypatch):
    build_mirror("cifar10", mirror, monkeypatch)
    folder = catalog.downloads_dir(catalog.lookup("cifar10"))
    folder.mkdir(parents=True)
    whole = (mirror / "cifar10" / "cifar-10-python.tar.gz").read_bytes()
    (folder / "cifar-10-python.tar.gz").write_bytes(whole[: len(whole) // 2])  # a partial copy
    with pytest.raises(ChecksumError, match=r"cifar-10-python.tar.gz in .* not the official .*delete it"):
        prepare("cifar10")
    assert cache_files(tmp_path) == ["downloads/cifar10/cifar-10-python.tar.gz"]  # the user's file, untouched


def test_partial__a_download_left_by_a_killed_run_is_restarted_never_used(tmp_path, mirror, monkeypatch):
    want = build_mirror("cifar10", mirror, monkeypatch)
    folder = catalog.downloads_dir(catalog.lookup("cifar10"))
    folder.mkdir(parents=True)
    stale = folder / ".cifar-10-python.tar.gz.x1y2z3.tmp"
    stale.write_bytes((mirror / "cifar10" / "cifar-10-python.tar.gz").read_bytes()[:100])
    prepare("cifar10")
    assert not stale.exists() and np.array_equal(_npz("cifar10")["x_train"], want["x_train"])
    assert cache_files(tmp_path) == ["cifar10.npz", "downloads/cifar10/cifar-10-python.tar.gz"]


def test_partial__an_interrupted_download_leaves_nothing_and_the_next_run_completes(tmp_path, mirror, monkeypatch):
    build_mirror("cifar10", mirror, monkeypatch)
    real = download._transfer

    def half_then_interrupt(url: str, dest: Path) -> None:
        real(url, dest)
        dest.write_bytes(dest.read_bytes()[:500])
        raise KeyboardInterrupt

    monkeypatch.setattr(download, "_transfer", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        prepare("cifar10")
    assert cache_files(tmp_path) == []

    def connection_reset(url: str, dest: Path) -> None:
        dest.write_bytes(b"partial")
        raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(download, "_transfer", connection_reset)
    with pytest.raises(
        DownloadError, match=r"cifar-10-python.tar.gz from .*: the transfer failed: ConnectionResetError"
    ):
        prepare("cifar10")
    assert cache_files(tmp_path) == []
    monkeypatch.setattr(download, "_transfer", real)
    assert prepare("cifar10").is_file()


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the mirror folder; with `truncate`, announces the whole file but sends half and hangs up."""

    truncate = False

    def copyfile(self, source, outputfile) -> None:  # type: ignore[override]
        data = source.read()
        outputfile.write(data[: len(data) // 2] if self.truncate else data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_mirror(network, mirror, monkeypatch):
    """The mirror folder served on a loopback port (so torchvision's HTTP download path runs)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(mirror)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(catalog.MIRROR_ENV, f"http://127.0.0.1:{server.server_address[1]}")
    yield _Handler
    _Handler.truncate = False
    server.shutdown()
    server.server_close()


def test_http__torchvision_downloads_with_a_progress_bar(tmp_path, mirror, monkeypatch, http_mirror, capsys):
    want = build_mirror("cifar10", mirror, monkeypatch)
    prepare("cifar10")
    assert np.array_equal(_npz("cifar10")["x_test"], want["x_test"])
    assert "100%" in capsys.readouterr().err  # tqdm's bar, from torchvision's download_url


def test_http__a_transfer_cut_short_is_never_used(tmp_path, mirror, monkeypatch, http_mirror):
    build_mirror("cifar10", mirror, monkeypatch)
    http_mirror.truncate = True
    with pytest.raises(DownloadError, match="cifar-10-python.tar.gz .*(transfer failed|not the official)"):
        prepare("cifar10")
    assert cache_files(tmp_path) == []


def _corrupt_cifar(folder: Path) -> None:
    path, _ = make_cifar10(folder)
    path.write_bytes(path.read_bytes()[:-200])  # a truncated gzip stream


def _cifar_without_test_batch(folder: Path) -> None:
    path, _ = make_cifar10(folder / "full")
    with tarfile.open(path) as src, tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as out:
        for m in src.getmembers():
            if not m.name.endswith("test_batch"):
                out.addfile(m, src.extractfile(m))


@pytest.mark.parametrize(
    "name, spoil, why",
    [
        ("cifar10", _corrupt_cifar, "EOFError|BadGzipFile|ReadError|Error"),
        ("cifar10", _cifar_without_test_batch, "test_batch missing from the archive"),
        ("mnist", lambda f: [p.write_bytes(b"not gzip at all") for p in MAKERS["mnist"](f)[0][:1]], "gzip"),
    ],
)
def test_corrupt__an_archive_that_matches_its_md5_but_cannot_be_read_is_a_clear_error(
    tmp_path, mirror, monkeypatch, name, spoil, why
):
    build_mirror(name, mirror, monkeypatch)
    spoil(mirror / name)
    for f in catalog.lookup(name).files:
        set_md5(monkeypatch, name, f.name, md5(mirror / name / f.name))
    with pytest.raises(CorruptArchiveError) as err:
        prepare(name)
    msg = str(err.value)
    assert "\n" not in msg and "not a readable" in msg and "download afresh" in msg
    assert re.search(why, msg), msg
    assert cache_files(tmp_path) == []  # no archive, no .npz, no temporary file


def test_corrupt__a_pickle_that_would_run_code_is_refused_unrun(tmp_path, mirror, monkeypatch):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    build_mirror("cifar10", mirror, monkeypatch)
    path = mirror / "cifar10" / "cifar-10-python.tar.gz"
    _, _ = make_cifar10(tmp_path / "src")
    with tarfile.open(tmp_path / "src" / "cifar-10-python.tar.gz") as src, tarfile.open(path, "w:gz") as out:
        for m in src.getmembers():
            data = src.extractfile(m).read()
            if m.name.endswith("data_batch_1"):
                data = pickle.dumps({b"data": Payload(), b"labels": []}, protocol=2)
                m.size = len(data)
            out.addfile(m, io.BytesIO(data))
    set_md5(monkeypatch, "cifar10", path.name, md5(path))
    with pytest.raises(CorruptArchiveError, match="unexpected object .*system"):
        prepare("cifar10")
    assert not marker.exists() and cache_files(tmp_path) == []


def test_offline__one_line_names_the_file_its_url_and_the_folder_then_a_file_put_there_works(
    tmp_path, monkeypatch, network
):
    with pytest.raises(DownloadError) as err:
        prepare("cifar10")
    msg = str(err.value)
    folder = tmp_path / "cache" / "downloads" / "cifar10"
    assert "\n" not in msg and "cifar-10-python.tar.gz" in msg and f"{folder}/" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg and "$OPENJEPA_DATA" in msg
    assert network.refused == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert cache_files(tmp_path) == []
    path, want = make_cifar10(folder)  # fetched by hand
    set_md5(monkeypatch, "cifar10", path.name, md5(path))
    assert np.array_equal(build_dataset("cifar10", "train").images, want["x_train"])
    assert network.refused == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]  # no second try


def test_offline__every_missing_file_of_a_dataset_is_named(tmp_path):
    with pytest.raises(DownloadError) as err:
        prepare("fashion-mnist")
    msg = str(err.value)
    assert all(f.urls[0] in msg for f in catalog.lookup("fashion-mnist").files) and "\n" not in msg


# ------------------------------------------------------------------------- specs, ImageNet


def test_spec__names_parse_in_any_case_and_have_no_image_files_to_index(tmp_path):
    for name in catalog.DATASETS:
        spec = parse_data_spec(f" {name.upper()} ")
        assert (spec.kind, spec.name, spec.path, spec.text) == ("named", name, None, name.upper())
        assert spec.stat_path == str(tmp_path / "cache" / catalog.DATASETS[name].output)
        assert spec.image_root is None and not spec.streamed
    with pytest.raises(ValueError, match="cannot index 'cifar10': a named dataset holds no image files"):
        image_inputs(["cifar10"])
    assert catalog.lookup("Fashion-MNIST").name == "fashion-mnist"
    with pytest.raises(KeyError, match="known: cifar10, cifar100"):
        catalog.lookup("cifar1000")


def test_imagenet__train_and_val_of_the_usual_layout(tmp_path):
    root = make_imagenet_tree(tmp_path / "in1k")
    spec = parse_data_spec(f"ImageNet:{root}")
    assert (spec.kind, spec.path, spec.image_root, spec.stat_path) == ("imagenet", str(root), str(root), str(root))
    train, val = build_dataset(spec, "train"), build_dataset(spec, "test")
    assert (len(train), len(val)) == (6, 4) and train.classes == ["n01440764", "n02102040"]
    assert [y for _, y in val] == [0, 0, 1, 1] and image_inputs([f"imagenet:{root}"]) == [str(root)]
    (tmp_path / "list.txt").write_text("n01440764_train_0.JPEG\n")
    assert len(build_dataset(spec, "train", subset_file=tmp_path / "list.txt")) == 1


def test_imagenet__a_flat_val_folder_or_a_missing_split_is_explained(tmp_path):
    flat = make_imagenet_tree(tmp_path / "flat", flat_val=True)
    assert len(build_dataset(f"imagenet:{flat}", "train")) == 6
    with pytest.raises(ValueError, match=r"val holds images directly: sort them into .*/val/<wnid>/"):
        build_dataset(f"imagenet:{flat}", "val")
    shutil.rmtree(flat / "val")
    with pytest.raises(ValueError, match=r"not in the ImageNet layout: .*val is missing"):
        build_dataset(f"imagenet:{flat}", "test")
    with pytest.raises(FileNotFoundError, match="imagenet folder not found"):
        build_dataset(f"imagenet:{tmp_path / 'nothing'}")
    with pytest.raises(ValueError, match="bad dataset spec"):
        parse_data_spec("imagenet:")


def test_catalog__every_entry_is_complete():
    for entry in catalog.DATASETS.values():
        assert entry.files and entry.output.endswith(".npz") and entry.layout in READERS
        for f in entry.files:
            assert len(f.md5) == 32 and int(f.md5, 16) >= 0 and all(u.endswith("/" + f.name) for u in f.urls)
    assert [f.name for f in catalog.lookup("cifar10").files] == ["cifar-10-python.tar.gz"]
    assert len(CIFAR10_NAMES) == 10
