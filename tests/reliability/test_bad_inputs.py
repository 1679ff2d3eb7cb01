"""Bad inputs: each is a one-line error that names the fix, raised before any training step
(corrupt image files are the exception: they are skipped and counted, and the run goes on)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from openjepa.config import ConfigError, load_config
from openjepa.core.checkpoint import CheckpointError
from openjepa.masks import MaskSettingsError
from openjepa.train.loop import fit

from ._tiny import TINY, tiny_cfg


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg, f"not a one-line message: {msg!r}"
    return msg


@pytest.mark.parametrize(
    "override, names_the_fix",
    [
        ("optimization.lrr=1e-3", "did you mean 'optimization.lr'"),  # unknown key
        ("optimisation.lr=1e-3", "did you mean"),  # unknown section
        ("optimization.lr=fast", "'optimization.lr' expects float, got 'fast'"),  # wrong type
        ("optimization.epochs=2.5", "'optimization.epochs' expects int"),  # wrong type
        ("data.crop_size=30", "set data.crop_size to a multiple of 4 (e.g. 32)"),  # not divisible
        ("mask.min_keep=70", "set mask.min_keep < 64"),  # impossible mask
        ("mask.pred_mask_scale=[0.001,0.002]", "raise the scale, lower mask.min_keep"),  # impossible mask
    ],
)
def test_bad_config__one_line_config_error_naming_the_key_and_fix(tmp_path, override, names_the_fix):
    with pytest.raises(ConfigError) as e:
        tiny_cfg(tmp_path / "run", override)
    assert names_the_fix in _one_line(e)


def test_bad_config_file__unknown_key_in_yaml_names_the_key(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("optimization:\n  learning_rate: 0.001\n")
    with pytest.raises(ConfigError, match="optimization.learning_rate") as e:
        load_config(path)
    _one_line(e)


def test_impossible_mask_settings__refused_up_front_by_the_collator(tmp_path):
    # valid key by key, impossible together: a 2x2 context minus a 3x3 target can never keep min_keep
    with pytest.raises(MaskSettingsError, match="these settings cannot be met; lower mask.min_keep") as e:
        fit(tiny_cfg(tmp_path / "run", "mask.enc_mask_scale=[0.1,0.12]"), progress=False)
    _one_line(e)
    assert not (tmp_path / "run").exists()  # nothing written


@pytest.mark.parametrize(
    "change, mismatches",
    [
        (
            "meta.pred_emb_dim=96",
            [
                "pred_emb_dim: checkpoint 48 vs config 96",
                "predictor.mask_token: checkpoint (1, 1, 48) vs config (1, 1, 96)",
            ],
        ),
        (
            "meta.depth=2",
            ["depth: checkpoint 1 vs config 2", "encoder.blocks.1.attn.proj.bias: checkpoint absent vs config (192,)"],
        ),
    ],
)
def test_resume_into_another_architecture__lists_mismatched_fields_and_shapes(tmp_path, change, mismatches):
    run = tmp_path / "run"
    fit(tiny_cfg(run, "optimization.max_steps=2"), progress=False)
    with pytest.raises(CheckpointError, match="ckpt-step00000002.pt is of another architecture") as e:
        fit(tiny_cfg(run, change), resume=True, progress=False)
    msg = _one_line(e)
    assert all(m in msg for m in mismatches), msg
    assert "more); resume with the config it was trained with or use a new logging.folder" in msg


def test_missing_data_folder__names_the_keys_to_set(tmp_path):
    cfg = load_config(
        None,
        TINY
        + [f"data.root_path={tmp_path / 'nowhere'}", "data.image_folder=train", f"logging.folder={tmp_path / 'run'}"],
    )
    with pytest.raises(FileNotFoundError, match="data folder not found: .*nowhere.*set data.root_path") as e:
        fit(cfg, progress=False)
    _one_line(e)


def test_empty_image_folder__says_what_layout_is_expected(tmp_path):
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    (tmp_path / "imgs" / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"no images found in .*expected class sub-folders") as e:
        fit(tiny_cfg(tmp_path / "run", f"data.dataset=folder:{tmp_path / 'imgs'}"), progress=False)
    _one_line(e)


def test_empty_npz_dataset__is_refused_naming_the_setting(tmp_path):
    np.savez(tmp_path / "empty.npz", x_train=np.zeros((0, 32, 32, 3), np.uint8), y_train=np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="is empty; point data.dataset") as e:
        fit(tiny_cfg(tmp_path / "run", f"data.dataset={tmp_path / 'empty.npz'}"), progress=False)
    _one_line(e)


def test_too_few_images_for_one_batch__says_to_lower_the_batch_size(tmp_path):
    with pytest.raises(ValueError, match="too few for one step.*lower data.batch_size") as e:
        fit(tiny_cfg(tmp_path / "run", "data.dataset=shapes:3"), progress=False)
    _one_line(e)


def test_corrupt_image_files__are_skipped_counted_and_the_run_continues(tmp_path, caplog):
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    good = (root / "a" / "0.png").read_bytes()
    (root / "a" / "garbage.png").write_bytes(b"this is not a png" * 10)
    (root / "a" / "truncated.png").write_bytes(good[: len(good) // 3])
    (root / "b" / "empty.jpg").write_bytes(b"")
    (root / "b" / "garbage.jpeg").write_bytes(bytes(rng.integers(0, 255, 500, dtype=np.uint8)))
    # 20 files, batch 4: every file is drawn in every epoch, so every bad one is met
    with caplog.at_level(logging.WARNING):
        result = fit(tiny_cfg(tmp_path / "run", f"data.dataset=folder:{root}"), progress=False)
    assert result.stop_reason == "completed" and result.steps == 10
    assert result.skipped_images == 4
    text = caplog.text
    for name in ("garbage.png", "truncated.png", "empty.jpg", "garbage.jpeg"):
        assert f"skipping unreadable image {root}" in text and name in text
    assert "4 unreadable image file(s) were skipped" in text


@pytest.mark.parametrize(
    "override, expected",
    [
        ("optimization.lrr=1e-3", "unknown config key 'optimization.lrr'; did you mean 'optimization.lr'?"),
        ("data.crop_size=30", "set data.crop_size to a multiple of 4"),
        ("data.dataset=folder:/nonexistent/openjepa-images", "data folder not found"),
    ],
)
def test_cli__bad_inputs_are_one_line_errors_with_exit_code_2(tmp_path, capsys, cli_main, override, expected):
    argv = ["pretrain", "--no-progress", "--out", str(tmp_path / "run")]
    for item in TINY + ["data.dataset=shapes:24", override]:
        argv += ["--set", item]
    assert cli_main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("openjepa pretrain: error: ") and expected in err[0], err
