"""CUDA paths (bf16 autocast feature extraction, probes on the GPU); skipped without a GPU."""

import pytest
import torch

from openjepa.evaluate import extract_features, knn_eval, linear_probe

from ._synthetic import ImageDataset, StandInEncoder, make_blobs

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_bf16_features_on_cuda_are_close_to_fp32_on_cpu():
    torch.manual_seed(0)
    enc, ds = StandInEncoder(embed_dim=16), ImageDataset(12)
    ref, _ = extract_features(enc, ds, pooling="avg", progress=False)
    f, y = extract_features(enc, ds, pooling="avg", device="cuda", progress=False)  # bf16 by default
    assert f.device.type == "cpu" and f.dtype == torch.float32 and len(y) == 12
    torch.testing.assert_close(f, ref, atol=5e-2, rtol=5e-2)
    f32, _ = extract_features(enc, ds, pooling="avg", device="cuda", amp_bf16=False, progress=False)
    torch.testing.assert_close(f32, ref, atol=1e-4, rtol=1e-4)


def test_probes_run_on_cuda():
    xtr, ytr = make_blobs(500, seed=0)
    xte, yte = make_blobs(200, seed=1)
    assert linear_probe(xtr, ytr, xte, yte, epochs=20, device="cuda").top1 > 0.95
    assert knn_eval(xtr.cuda(), ytr, xte, yte, ks=(10,)).at(10).top1 > 0.9
