"""meta.precision: auto picks bf16 only where the chip has native bf16, and the run records the choice."""

from __future__ import annotations

import json

import pytest
import torch

from openjepa.config import ConfigError, load_config
from openjepa.core.precision import cpu_flags, cpu_native_bf16, cpu_summary, requested_precision, resolve_precision
from openjepa.train.loop import precision_for

CPU = torch.device("cpu")
AVX2_ONLY = frozenset({"sse4_2", "avx", "avx2", "fma"})
AVX512_BF16 = frozenset({"avx2", "avx512f", "avx512_bf16"})
AMX = frozenset({"avx2", "avx512f", "amx_tile", "amx_bf16"})


def test_auto__fp32_on_a_cpu_without_native_bf16():
    p = resolve_precision("auto", CPU, flags=AVX2_ONLY)
    assert (p.name, p.amp_dtype) == ("fp32", None)
    assert "without AVX512-BF16" in p.reason and "avx2" in p.reason


@pytest.mark.parametrize("flags", [AVX512_BF16, AMX], ids=["avx512_bf16", "amx"])
def test_auto__bf16_on_a_cpu_with_native_bf16(flags):
    p = resolve_precision("auto", CPU, flags=flags)
    assert (p.name, p.amp_dtype) == ("bf16", torch.bfloat16)
    assert "bf16" in p.reason


def test_explicit_choices_on_cpu__fp32_always_bf16_with_a_warning_fp16_refused(caplog):
    assert resolve_precision("fp32", CPU, flags=AVX512_BF16).name == "fp32"
    with caplog.at_level("WARNING", logger="openjepa.precision"):
        assert resolve_precision("bf16", CPU, flags=AVX2_ONLY).name == "bf16"  # asked for: honoured
    assert "emulated" in caplog.text
    with pytest.raises(ValueError, match="fp16 on a CPU"):
        resolve_precision("fp16", CPU, flags=AVX512_BF16)
    with pytest.raises(ValueError, match="must be one of"):
        resolve_precision("half", CPU)


def test_cpu_flags__read_from_cpuinfo_x86_and_arm(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")
    assert cpu_native_bf16(cpu_flags(x86))[0] and cpu_native_bf16(cpu_flags(arm))[0]
    assert cpu_flags(tmp_path / "missing") == frozenset()
    assert not cpu_native_bf16(frozenset())[0]


def test_config__precision_key_validated_and_use_bfloat16_is_the_alias():
    assert requested_precision(None, True) == "auto" and requested_precision(None, False) == "fp32"
    assert requested_precision("bf16", False) == "bf16"  # an explicit precision wins
    assert load_config(None, ["meta.precision=bf16"]).meta.precision == "bf16"
    assert load_config(None).meta.precision is None
    with pytest.raises(ConfigError, match="meta.precision"):
        load_config(None, ["meta.precision=bf15"])


def test_precision_for__config_with_mocked_detection(monkeypatch):
    import openjepa.core.precision as precision

    cfg = load_config(None, ["meta.use_bfloat16=true"])
    monkeypatch.setattr(precision, "cpu_flags", lambda *a: AVX2_ONLY)
    assert precision_for(cfg, CPU).name == "fp32"
    monkeypatch.setattr(precision, "cpu_flags", lambda *a: AVX512_BF16)
    assert precision_for(cfg, CPU).name == "bf16"
    assert precision_for(load_config(None, ["meta.use_bfloat16=false"]), CPU).name == "fp32"


def test_fit__records_the_precision_and_its_reason_in_the_run_folder(tmp_path):
    from openjepa.train.loop import fit

    from ..train.test_loop import tiny_cfg

    cfg = tiny_cfg(tmp_path, "optimization.max_steps=1", "meta.precision=bf16")
    fit(cfg, progress=False)
    record = json.loads((tmp_path / "precision.json").read_text())
    assert record["precision"] == "bf16" and record["requested"] == "bf16" and record["reason"]


def test_train_step__fp16_loss_scaling_updates_the_model_and_skips_overflow():
    from openjepa.models.ijepa import IJEPA
    from openjepa.train import make_optimizer
    from openjepa.train.step import train_step

    torch.manual_seed(0)
    model = IJEPA.build("vit_tiny", 8, 32, pred_depth=1, pred_emb_dim=48, depth=1)
    optimizer = make_optimizer(model.encoder, model.predictor)
    micro = [
        (
            torch.randn(4, 3, 32, 32),
            [torch.tensor([[0, 1, 2, 4, 5, 6]] * 4)],
            [torch.tensor([[10, 11]] * 4), torch.tensor([[14, 15]] * 4)],
        )
    ]
    before = [p.detach().clone() for p in model.encoder.parameters()]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    res = train_step(model, optimizer, micro, 1e-3, 0.04, 0.996, amp_dtype=torch.float16, scaler=scaler)
    assert torch.isfinite(res.loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.encoder.parameters()))
    # a scale that overflows fp16 gradients: the step is skipped and the scale lowered
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**60)
    before = [p.detach().clone() for p in model.encoder.parameters()]
    train_step(model, optimizer, micro, 1e-3, 0.04, 0.996, amp_dtype=torch.float16, scaler=scaler)
    assert all(torch.equal(a, b) for a, b in zip(before, model.encoder.parameters()))
    assert scaler.get_scale() < 2.0**60


SUBNORMAL = 1e-39  # below float32's smallest normal (1.18e-38)


def _survives_arithmetic() -> bool:
    return float(torch.tensor([SUBNORMAL]) * 1.0) != 0.0


def test_flush_denormals__zeroes_subnormal_results_and_can_be_undone():
    from openjepa.core.precision import flush_denormals

    if not flush_denormals(True):
        pytest.skip("this CPU has no flush-to-zero mode")
    try:
        assert not _survives_arithmetic()
        assert float(torch.tensor([1e-30]) * 1.0) == pytest.approx(1e-30)  # normal values untouched
    finally:
        flush_denormals(False)
    assert _survives_arithmetic()


@pytest.mark.parametrize("keep", [False, True])
def test_cli__flushes_denormals_first_unless_told_to_keep_them(monkeypatch, keep):
    from openjepa.cli import main as cli
    from openjepa.core import precision

    calls: list[bool] = []
    monkeypatch.setattr(precision, "flush_denormals", lambda enabled=True: calls.append(enabled) or True)
    argv = ["--keep-denormals"] if keep else []
    assert cli.main([*argv, "info"]) == 0  # lists the presets: no heavy work
    assert calls == ([] if keep else [True])


def test_cpu_summary__names_the_cpu_and_the_flags_that_set_matmul_speed(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("model name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512f amx_tile amx_bf16\n")
    summary = cpu_summary(info)
    assert summary["name"] == "Test CPU 9000"
    assert summary["flags"] == {"avx2": True, "avx512f": True, "avx512_bf16": False, "amx": ["amx_bf16", "amx_tile"]}
    assert summary["torch_threads"] == torch.get_num_threads()
    missing = cpu_summary(tmp_path / "missing")  # no /proc/cpuinfo: still a name, and no flags claimed
    assert missing["name"] and not any(v for v in missing["flags"].values())
