"""The search engine on hand-crafted features and generated images: exact top-k, updates, round trip."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from openjepa.data.images import scan_images
from openjepa.search import FingerprintMismatchError, Index, IndexFormatError

from ._images import HandcraftedEncoder, source_image, write_near_duplicates


def brute_force(db: torch.Tensor, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    s = F.normalize(q, dim=1) @ F.normalize(db, dim=1).T
    order = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :k]
    return s.gather(1, order), order


@pytest.fixture(scope="module")
def feats() -> torch.Tensor:
    return torch.randn(3000, 48, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def dup_folder(tmp_path_factory) -> tuple[Path, dict[str, list[str]]]:
    root = tmp_path_factory.mktemp("dups")
    groups = write_near_duplicates(root / "images", n_sources=8)
    (root / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (root / "images" / "notes.txt").write_text("not an image")
    (root / "images" / ".hidden.png").write_bytes(b"hidden files are not indexed")
    return root / "images", groups


# ------------------------------------------------------------------------------------------ search


@pytest.mark.parametrize("chunk", [None, 7, 1000])
def test_exact_topk_matches_brute_force(feats, chunk):
    index = Index(feats, [f"img{i}" for i in range(len(feats))])
    q = torch.randn(37, 48, generator=torch.Generator().manual_seed(1))
    res = index.search(q, k=10, chunk_size=chunk)
    want_s, want_i = brute_force(feats, q, 10)
    assert torch.equal(res.indices, want_i)
    torch.testing.assert_close(res.scores, want_s, rtol=0, atol=1e-5)
    assert res.paths[0] == [f"img{i}" for i in want_i[0].tolist()]


def test_search_excludes_self_and_pads(feats):
    index = Index(feats[:5], list("abcde"))
    res = index.search(feats[:2], k=8, exclude=[0, -1])
    assert res.indices[0, 0] != 0 and 0 not in res.indices[0].tolist()
    assert res.indices[1, 0] == 1 and res.scores[1, 0] == pytest.approx(1.0, abs=1e-6)
    assert res.indices.shape == (2, 8)
    assert (res.indices[0, 4:] == -1).all() and torch.isinf(res.scores[0, 4:]).all()  # 4 candidates left
    assert len(res.paths[0]) == 4 and len(res.paths[1]) == 5


def test_centred_search_is_cosine_of_centred_features(feats):
    shifted = feats + 6.0  # a large shared component: plain cosines all crowd near 1
    index = Index(shifted, [str(i) for i in range(len(feats))])
    q = shifted[:4] + 0.1 * torch.randn(4, 48, generator=torch.Generator().manual_seed(2))
    plain = index.search(q, k=5)
    assert plain.scores.min() > 0.9
    res = index.search(q, k=5, center=True)
    m = F.normalize(shifted, dim=1).mean(0)
    want_s, want_i = brute_force(F.normalize(shifted, dim=1) - m, F.normalize(q, dim=1) - m, 5)
    assert torch.equal(res.indices, want_i)
    torch.testing.assert_close(res.scores, want_s, rtol=0, atol=1e-5)
    assert res.indices[:, 0].tolist() == [0, 1, 2, 3]


def test_add_features_replaces_and_remove(feats):
    index = Index(feats[:3], ["a", "b", "c"])
    index.add_features(feats[3:5], ["b", "d"])  # b is replaced, d appended
    assert index.paths == ["a", "b", "c", "d"]
    torch.testing.assert_close(index.features[1], F.normalize(feats[3], dim=0))
    assert index.search(feats[4:5], k=1).paths == [["d"]]
    assert index.remove(["a", "zzz"]) == 1
    assert index.paths == ["b", "c", "d"] and index.position("d") == 2
    with pytest.raises(ValueError, match="width"):
        index.add_features(torch.randn(1, 5), ["e"])


# ---------------------------------------------------------------------------------------- storage


def test_round_trip(tmp_path, feats):
    paths = [f"/data/ünïcödé/{i}.png" for i in range(100)]
    stats = torch.stack([torch.arange(100), torch.arange(100) * 1000], dim=1)
    index = Index(feats[:100], paths, fingerprint="abc123", stats=stats, meta={"note": "x"})
    out = index.save(tmp_path / "sub" / "test.index")
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]
    back = Index.load(out)
    assert back.paths == paths and back.fingerprint == "abc123" and back.meta["note"] == "x"
    assert torch.equal(back.features, index.features) and torch.equal(back.stats, stats)
    q = feats[100:110]
    assert torch.equal(back.search(q, k=7).indices, index.search(q, k=7).indices)
    # safetensors, never pickle: the file is an 8-byte header length followed by a JSON header
    raw = out.read_bytes()
    assert raw[8:9] == b"{" and b"openjepa-index" in raw[: 8 + int.from_bytes(raw[:8], "little")]


def test_round_trip_half_and_empty(tmp_path, feats):
    half = Index(feats[:10], [str(i) for i in range(10)], dtype=torch.float16)
    back = Index.load(half.save(tmp_path / "half.index"))
    assert back.features.dtype == torch.float16 and torch.equal(back.features, half.features)
    empty = Index.load(Index(None, [], fingerprint="f").save(tmp_path / "empty.index"))
    assert len(empty) == 0 and empty.fingerprint == "f"


def test_load_rejects_other_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(IndexFormatError, match="not an openjepa image index"):
        Index.load(tmp_path / "other.safetensors")
    (tmp_path / "junk.index").write_bytes(b"\x80\x04 pickle-looking junk")
    with pytest.raises(IndexFormatError):
        Index.load(tmp_path / "junk.index")
    with pytest.raises(FileNotFoundError):
        Index.load(tmp_path / "missing.index")


# ------------------------------------------------------------------------------- images and updates


def test_scan_is_recursive_and_skips_hidden_and_non_images(dup_folder):
    folder, groups = dup_folder
    files, roots = scan_images(folder)
    assert roots == [str(folder)]
    n_dups = sum(len(d) + 1 for d in groups.values())
    assert len(files) == n_dups + 1  # + broken.jpg; not notes.txt nor .hidden.png
    assert files == sorted(files) and all(os.path.isabs(f) for f in files)


def test_near_duplicates_are_retrieved_first(dup_folder):
    folder, groups = dup_folder
    enc = HandcraftedEncoder()
    index = Index.build(enc, folder, batch_size=5, progress=False)
    rep = index.last_report
    assert rep.added == len(index) == sum(len(d) + 1 for d in groups.values())
    assert [p for p, _ in rep.skipped] == [str(folder / "broken.jpg")]  # corrupt: skipped and counted
    for orig, dups in groups.items():
        members = [orig, *dups]  # crop, flip and colour shift of the same source
        res = index.search_images(enc, members, k=len(members) - 1)
        assert res.queries == members
        for q, found in zip(res.queries, res.paths):
            assert set(found) == set(members) - {q}, f"{q}: {found}"
    # the query itself is found when asked for (score 1)
    res = index.search_images(enc, next(iter(groups)), k=1, exclude_self=False)
    assert res.paths[0] == [next(iter(groups))] and res.scores[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_add_embeds_only_new_and_changed(tmp_path):
    groups = write_near_duplicates(tmp_path / "imgs", n_sources=3)
    enc = HandcraftedEncoder()
    calls: list[int] = []
    forward = enc.forward
    enc.forward = lambda x: (calls.append(len(x)), forward(x))[1]  # counts the images the encoder runs on
    index = Index.build(enc, tmp_path / "imgs", progress=False)
    assert sum(calls) == 12 and len(index) == 12
    index = Index.load(index.save(tmp_path / "i.index"))

    calls.clear()
    rep = index.add(enc, tmp_path / "imgs", progress=False)
    assert (rep.added, rep.changed, rep.unchanged, rep.removed) == (0, 0, 12, 0) and calls == []

    Image.fromarray(source_image(50)).save(tmp_path / "imgs" / "new_a.png")
    (tmp_path / "imgs" / "deeper").mkdir()
    Image.fromarray(source_image(51)).save(tmp_path / "imgs" / "deeper" / "new_b.bmp")
    changed = Path(groups[next(iter(groups))][1])  # the flip of source 0, overwritten
    Image.fromarray(source_image(52)).save(changed)
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))  # coarse-mtime filesystems
    gone = Path(groups[next(iter(groups))][0])
    gone.unlink()
    calls.clear()
    rep = index.add(enc, tmp_path / "imgs", prune=True, progress=False)
    assert (rep.added, rep.changed, rep.unchanged, rep.removed) == (2, 1, 10, 1)
    assert sum(calls) == 3  # only the new and changed files were embedded
    assert len(index) == 13 and str(gone) not in index.paths
    res = index.search_images(enc, tmp_path / "imgs" / "deeper" / "new_b.bmp", k=1, exclude_self=False)
    assert res.paths[0] == [str(tmp_path / "imgs" / "deeper" / "new_b.bmp")]
    # the changed file's features are those of its new content
    res = index.search_images(enc, changed, k=1, exclude_self=False)
    assert res.scores[0, 0] == pytest.approx(1.0, abs=1e-5)

    # a file that became unreadable loses its entry and is reported
    changed.write_bytes(b"garbage")
    rep = index.add(enc, tmp_path / "imgs", progress=False)
    assert [p for p, _ in rep.skipped] == [str(changed)] and rep.removed == 1 and str(changed) not in index.paths


def test_refuses_another_encoder(tmp_path):
    write_near_duplicates(tmp_path / "imgs", n_sources=1)
    index = Index.build(HandcraftedEncoder("weights-A"), tmp_path / "imgs", progress=False)
    with pytest.raises(FingerprintMismatchError, match="weights-B"):
        index.add(HandcraftedEncoder("weights-B"), tmp_path / "imgs", progress=False)
    with pytest.raises(FingerprintMismatchError):
        index.search_images(HandcraftedEncoder("weights-B"), tmp_path / "imgs", k=1)
    with pytest.raises(FingerprintMismatchError, match="avg_last4"):
        index.check_encoder(HandcraftedEncoder("weights-A"), pooling="avg_last4")


def test_build_needs_images_and_workers_give_the_same_index(tmp_path, dup_folder):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="no image files"):
        Index.build(HandcraftedEncoder(), tmp_path / "empty", progress=False)
    folder, _ = dup_folder
    a = Index.build(HandcraftedEncoder(), folder, batch_size=4, progress=False)
    b = Index.build(HandcraftedEncoder(), folder, batch_size=7, num_workers=2, progress=False)
    assert a.paths == b.paths and torch.equal(a.features, b.features)
    assert len(b.last_report.skipped) == 1


def test_interrupted_build_resumes(tmp_path):
    write_near_duplicates(tmp_path / "imgs", n_sources=3)  # 12 images
    enc = HandcraftedEncoder()
    forward, seen = enc.forward, []

    def flaky(x):
        if sum(seen) >= 8:
            raise KeyboardInterrupt  # e.g. Ctrl-C after two saved slices
        seen.append(len(x))
        return forward(x)

    enc.forward = flaky
    out = tmp_path / "imgs.index"
    with pytest.raises(KeyboardInterrupt):
        Index.build(enc, tmp_path / "imgs", batch_size=2, save_to=out, save_every=4, progress=False)
    partial = Index.load(out)
    assert len(partial) == 8
    seen.clear()
    enc.forward = forward
    rep = partial.add(enc, tmp_path / "imgs", save_to=out, progress=False)
    assert (rep.added, rep.unchanged) == (4, 8) and len(Index.load(out)) == 12
