"""extract_features (shapes, pooling maths, mode restore), fingerprint and FeatureCache."""

import torch
from torch.utils.data import DataLoader

from openjepa.evaluate import FeatureCache, extract_features, fingerprint

from ._synthetic import ImageDataset, StandInEncoder

N, SIZE, PATCH, D = 10, 16, 4, 16
T = (SIZE // PATCH) ** 2


def _encoder():
    torch.manual_seed(0)
    return StandInEncoder(embed_dim=D, patch=PATCH)


def test_extract_features_shapes_for_each_pooling():
    enc, ds = _encoder(), ImageDataset(N, SIZE)
    f, y = extract_features(enc, ds, pooling="avg", batch_size=4, progress=False)
    assert f.shape == (N, D) and f.dtype == torch.float32
    assert y.tolist() == ds.labels.tolist()  # order preserved across a ragged last batch
    f4, _ = extract_features(enc, ds, pooling="avg_last4", batch_size=4, progress=False)
    assert f4.shape == (N, 4 * D) and f4.dtype == torch.float32
    fp, _ = extract_features(enc, ds, pooling="patch", batch_size=4, progress=False)
    assert fp.shape == (N, T, D) and fp.dtype == torch.float16


def test_avg_equals_manual_token_mean_and_last4_ends_with_it():
    enc, ds = _encoder(), ImageDataset(N, SIZE)
    f, _ = extract_features(enc, ds, pooling="avg", batch_size=3, progress=False)
    with torch.no_grad():
        enc.eval()
        manual = enc(ds.images).mean(dim=1)
        layers = enc.get_intermediate_layers(ds.images, 4)
    torch.testing.assert_close(f, manual)
    f4, _ = extract_features(enc, ds, pooling="avg_last4", batch_size=3, progress=False)
    torch.testing.assert_close(f4, torch.cat([t.mean(dim=1) for t in layers], dim=1))
    torch.testing.assert_close(f4[:, -D:], f)  # the last of the 4 layers is the final output


def test_patch_pooling_keeps_every_token():
    enc, ds = _encoder(), ImageDataset(N, SIZE)
    fp, _ = extract_features(enc, ds, pooling="patch", batch_size=4, progress=False)
    with torch.no_grad():
        ref = enc.eval()(ds.images)
    torch.testing.assert_close(fp.float(), ref, atol=2e-3, rtol=2e-3)  # float16 storage


def test_extract_features_restores_training_mode_and_accepts_a_dataloader():
    enc, ds = _encoder(), ImageDataset(N, SIZE)
    enc.train()
    f, y = extract_features(enc, DataLoader(ds, batch_size=7), progress=False)
    assert enc.training
    assert f.shape == (N, D) and len(y) == N


def test_fingerprint_is_stable_and_changes_when_weights_change():
    enc = _encoder()
    a = fingerprint(enc.state_dict(), "toy/train", "avg")
    assert a == fingerprint(enc.state_dict(), "toy/train", "avg")
    assert a == fingerprint(enc, "toy/train", "avg")  # a module hashes as its state dict
    assert a != fingerprint(enc.state_dict(), "toy/train", "avg_last4")
    with torch.no_grad():
        enc.blocks[0][0].weight[0, 0] += 1e-3
    assert a != fingerprint(enc.state_dict(), "toy/train", "avg")
    assert fingerprint("1") != fingerprint(1)
    assert fingerprint(("ab", "c")) != fingerprint(("a", "bc"))
    assert fingerprint(torch.zeros(2, dtype=torch.bfloat16)) != fingerprint(torch.zeros(2))


def test_feature_cache_skips_fn_on_second_call(tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    calls = []
    feats, labels = torch.randn(5, 3), torch.arange(5)

    def fn():
        calls.append(1)
        return feats, labels

    key = fingerprint("weights", "data", "avg")
    f1, y1 = cache.get_or_compute(key, fn)
    f2, y2 = cache.get_or_compute(key, fn)
    assert len(calls) == 1
    assert torch.equal(f1, feats) and torch.equal(f2, feats) and torch.equal(y2, labels)
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert files == [f"{key}.pt"]  # no temp file left behind
    cache.get_or_compute(fingerprint("other weights", "data", "avg"), fn)
    assert len(calls) == 2


def test_feature_cache_writes_nothing_when_fn_fails(tmp_path):
    cache = FeatureCache(tmp_path)

    def boom():
        raise RuntimeError("encoder crashed")

    try:
        cache.get_or_compute("abc", boom)
    except RuntimeError:
        pass
    assert list(tmp_path.iterdir()) == []


class _Stream(torch.utils.data.IterableDataset):
    def __init__(self, ds):
        self.ds = ds

    def __iter__(self):
        return (self.ds[i] for i in range(len(self.ds)))


def test_extract_features_from_an_iterable_dataset_without_length():
    enc, ds = _encoder(), ImageDataset(N, SIZE)
    f, y = extract_features(enc, _Stream(ds), batch_size=4, progress=False)
    ref, ref_y = extract_features(enc, ds, batch_size=4, progress=False)
    torch.testing.assert_close(f, ref)
    assert torch.equal(y, ref_y)


def test_extract_features_with_a_drop_last_loader_keeps_only_what_it_yielded():
    enc, ds = _encoder(), ImageDataset(N, SIZE)
    f, y = extract_features(enc, DataLoader(ds, batch_size=4, drop_last=True), progress=False)
    assert f.shape == (8, D) and len(y) == 8


def test_unknown_pooling_is_rejected():
    import pytest

    with pytest.raises(ValueError):
        extract_features(_encoder(), ImageDataset(2, SIZE), pooling="cls", progress=False)


def test_evaluation_and_embed_share_one_pooling():
    from openjepa import load_encoder
    from openjepa.evaluate import POOLINGS
    from openjepa.models.pooling import POOLINGS as MODEL_POOLINGS
    from openjepa.models.pooling import pool_features

    assert POOLINGS == MODEL_POOLINGS == ("avg", "avg_last4", "avg_all", "grid_all", "patch")
    enc = load_encoder("random:vit_tiny", img_size=16, patch_size=4, depth=5, seed=0)
    ds = ImageDataset(N, SIZE)
    for pooling in POOLINGS:
        f, _ = extract_features(enc, ds, pooling=pooling, batch_size=4, progress=False)
        embedded = enc.embed(ds.images, batch_size=3, pooling=pooling, progress=False)
        with torch.no_grad():
            direct = pool_features(enc, ds.images, pooling)
        assert embedded.dtype == direct.dtype == torch.float32
        torch.testing.assert_close(embedded, direct, rtol=0, atol=1e-6)
        if pooling == "patch":  # extract_features stores all tokens in half precision
            assert f.dtype == torch.float16
            torch.testing.assert_close(f.float(), direct, atol=2e-3, rtol=2e-3)
        else:
            torch.testing.assert_close(f, direct, rtol=0, atol=1e-6)
    assert direct.shape == (N, T, 192)
    with torch.no_grad():
        last4 = pool_features(enc, ds.images[:2], "avg_last4")
    assert last4.shape == (2, 4 * 192)  # 4 of the 5 blocks
