"""Tests for openjepa.config: reference schema, strict loading, overrides, validation, recipes."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
import yaml

from openjepa.config import (
    Config,
    ConfigError,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
    validate,
)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

# A reference-schema YAML written the way the reference's own configs are (every key, alphabetical,
# `1.0e-06`-style floats), with values that all differ from the defaults where the type allows.
REFERENCE_YAML = textwrap.dedent(
    """\
    data:
      batch_size: 16
      color_jitter_strength: 0.5
      crop_scale:
      - 0.25
      - 0.9
      crop_size: 448
      image_folder: imagenet_full_size/other/
      num_workers: 4
      pin_mem: false
      root_path: /datasets/
      use_color_distortion: true
      use_gaussian_blur: true
      use_horizontal_flip: true
    logging:
      folder: /logs/vith16.448-bs.2048-ep.300/
      write_tag: jepa2
    mask:
      allow_overlap: true
      aspect_ratio:
      - 0.5
      - 2.0
      enc_mask_scale:
      - 0.8
      - 0.95
      min_keep: 12
      num_enc_masks: 2
      num_pred_masks: 3
      patch_size: 16
      pred_mask_scale:
      - 0.1
      - 0.25
    meta:
      copy_data: true
      load_checkpoint: true
      model_name: vit_giant
      pred_depth: 16
      pred_emb_dim: 512
      read_checkpoint: jepa-ep50.pth.tar
      use_bfloat16: false
    optimization:
      ema:
      - 0.99
      - 0.999
      epochs: 44
      final_lr: 1.0e-07
      final_weight_decay: 0.3
      ipe_scale: 1.25
      lr: 0.0015
      start_lr: 0.0001
      warmup: 3
      weight_decay: 0.05
    """
)


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults__equal_reference_vith14_recipe():
    cfg = load_config(None)
    m, d, k, o, g = cfg.meta, cfg.data, cfg.mask, cfg.optimization, cfg.logging
    assert (m.model_name, m.pred_depth, m.pred_emb_dim, m.use_bfloat16) == ("vit_huge", 12, 384, True)
    assert (m.load_checkpoint, m.read_checkpoint, m.copy_data) == (False, None, False)
    assert (d.root_path, d.image_folder, d.subset_file) == ("", "imagenet_full_size/061417/", None)
    assert (d.crop_size, d.crop_scale, d.batch_size, d.num_workers, d.pin_mem) == (224, (0.3, 1.0), 128, 10, True)
    assert not (d.use_horizontal_flip or d.use_color_distortion or d.use_gaussian_blur)
    assert d.color_jitter_strength == 0.0
    assert (k.patch_size, k.num_enc_masks, k.num_pred_masks, k.min_keep, k.allow_overlap) == (14, 1, 4, 10, False)
    assert (k.enc_mask_scale, k.pred_mask_scale, k.aspect_ratio) == ((0.85, 1.0), (0.15, 0.2), (0.75, 1.5))
    assert (o.ema, o.ipe_scale, o.weight_decay, o.final_weight_decay) == ((0.996, 1.0), 1.0, 0.04, 0.4)
    assert (o.epochs, o.warmup, o.start_lr, o.lr, o.final_lr) == (300, 40, 2e-4, 1e-3, 1e-6)
    assert g.write_tag == "jepa"
    # openjepa's extensions default to the reference behaviour
    assert (k.strategy, k.truncate, k.independent_scale_aspect, k.include_last_row_col, k.allow_full_size_blocks) == (
        "multiblock",
        "lowest",
        False,
        False,
        False,
    )
    assert (o.loss, o.target, o.target_from, o.accum_steps, o.grad_clip) == (
        "smooth_l1",
        "representation",
        "output",
        1,
        None,
    )
    assert cfg == Config()


def test_load__reference_schema_yaml_keeps_every_value(tmp_path):
    cfg = load_config(write(tmp_path, REFERENCE_YAML))
    expected = yaml.safe_load(REFERENCE_YAML)
    got = config_to_dict(cfg)
    for section, values in expected.items():
        for key, value in values.items():
            assert got[section][key] == value, f"{section}.{key}"
    assert isinstance(cfg.mask.enc_mask_scale, tuple)
    assert cfg.optimization.final_lr == 1e-7


def test_load__missing_sections_and_keys_take_defaults(tmp_path):
    cfg = load_config(write(tmp_path, "optimization:\n  lr: 0.002\nlogging:\n"))
    assert cfg.optimization.lr == 0.002
    assert dataclasses.replace(cfg.optimization, lr=1e-3) == Config().optimization
    assert cfg.mask == Config().mask and cfg.logging == Config().logging
    assert load_config(write(tmp_path, "", "empty.yaml")) == Config()


def test_load__yaml_1e_minus_3_string_becomes_float(tmp_path):
    text = "optimization:\n  lr: 1e-3\n  start_lr: 2e-4\n  ema: [9.96e-1, 1]\n"
    assert yaml.safe_load(text)["optimization"]["lr"] == "1e-3"  # the PyYAML quirk itself
    cfg = load_config(write(tmp_path, text))
    assert cfg.optimization.lr == 1e-3 and isinstance(cfg.optimization.lr, float)
    assert cfg.optimization.start_lr == 2e-4
    assert cfg.optimization.ema == (0.996, 1.0) and isinstance(cfg.optimization.ema[1], float)


def test_load__int_accepted_for_float_field(tmp_path):
    cfg = load_config(write(tmp_path, "optimization:\n  ipe_scale: 2\n"))
    assert cfg.optimization.ipe_scale == 2.0 and isinstance(cfg.optimization.ipe_scale, float)


@pytest.mark.parametrize(
    "text, bad, suggestion",
    [
        ("optimization:\n  lrr: 0.1\n", "optimization.lrr", "optimization.lr"),
        ("mask:\n  patch_sise: 16\n", "mask.patch_sise", "mask.patch_size"),
        ("optimisation:\n  lr: 0.1\n", "optimisation", "optimization"),
        ("optimization:\n  patch_size: 16\n", "optimization.patch_size", "mask.patch_size"),
    ],
)
def test_load__misspelt_key_names_closest_valid_key(tmp_path, text, bad, suggestion):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    msg = str(err.value)
    assert f"'{bad}'" in msg and f"did you mean '{suggestion}'?" in msg and "\n" not in msg


def test_load__unknown_key_without_close_match_lists_valid_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"'logging.zzz'.*valid keys in 'logging':.*write_tag"):
        load_config(write(tmp_path, "logging:\n  zzz: 1\n"))


def test_load__duplicate_key_refused(tmp_path):
    with pytest.raises(ConfigError, match="duplicate config key 'lr'"):
        load_config(write(tmp_path, "optimization:\n  lr: 0.1\n  lr: 0.2\n"))


@pytest.mark.parametrize(
    "text, key, expected",
    [
        ("optimization:\n  lr: fast\n", "optimization.lr", "float"),
        ("optimization:\n  epochs: 1.5\n", "optimization.epochs", "int"),
        ("meta:\n  use_bfloat16: 1\n", "meta.use_bfloat16", "bool"),
        ("data:\n  batch_size: true\n", "data.batch_size", "int"),
        ("mask:\n  aspect_ratio: [0.75, 1.5, 2.0]\n", "mask.aspect_ratio", "list of 2 floats"),
        ("mask:\n  enc_mask_scale: 0.9\n", "mask.enc_mask_scale", "list of 2 floats"),
        ("meta:\n  model_name: 7\n", "meta.model_name", "str"),
        ("optimization:\n  grad_clip: [1]\n", "optimization.grad_clip", "float or null"),
        ("mask: 3\n", "mask", "mapping"),
    ],
)
def test_load__wrong_type_names_key_type_and_value(tmp_path, text, key, expected):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    msg = str(err.value)
    assert f"'{key}'" in msg and expected in msg and "\n" not in msg


def test_overrides__change_value_and_convert_type(tmp_path):
    cfg = load_config(
        CONFIG_DIR / "demo.yaml",
        [
            "optimization.lr=5e-4",
            "mask.enc_mask_scale=[0.8,1.0]",
            "meta.use_bfloat16=true",
            "optimization.grad_clip=1",
            "optimization.max_steps=100",
            "logging.write_tag=123",
            "meta.read_checkpoint=null",
            "data.dataset=shapes:500",
            "--optimization.epochs=4",
        ],
    )
    assert cfg.optimization.lr == 5e-4 and isinstance(cfg.optimization.lr, float)
    assert cfg.mask.enc_mask_scale == (0.8, 1.0)
    assert cfg.meta.use_bfloat16 is True
    assert cfg.optimization.grad_clip == 1.0 and isinstance(cfg.optimization.grad_clip, float)
    assert cfg.optimization.max_steps == 100
    assert cfg.logging.write_tag == "123"
    assert cfg.meta.read_checkpoint is None
    assert cfg.data.dataset == "shapes:500"
    assert cfg.optimization.epochs == 4
    assert cfg.data.crop_size == 32  # untouched values keep the file's


def test_overrides__later_wins_and_bad_overrides_refused():
    cfg = load_config(None, ["meta.use_bfloat16=false", "meta.use_bfloat16=true"])
    assert cfg.meta.use_bfloat16 is True
    with pytest.raises(ConfigError, match="did you mean 'optimization.lr'"):
        load_config(None, ["optimization.lrr=1e-3"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["optimization.lr"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["lr=1e-3"])
    with pytest.raises(ConfigError, match="'optimization.epochs' expects int"):
        load_config(None, ["optimization.epochs=many"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.crop_size=225", "data.crop_size"),
        ("mask.patch_size=0", "mask.patch_size"),
        ("mask.enc_mask_scale=[0.0,1.0]", "mask.enc_mask_scale"),
        ("mask.pred_mask_scale=[0.3,0.2]", "mask.pred_mask_scale"),
        ("mask.pred_mask_scale=[0.2,1.5]", "mask.pred_mask_scale"),
        ("data.crop_scale=[0.3,1.2]", "data.crop_scale"),
        ("mask.aspect_ratio=[0,1.5]", "mask.aspect_ratio"),
        ("mask.aspect_ratio=[2.0,1.5]", "mask.aspect_ratio"),
        ("mask.num_pred_masks=0", "mask.num_pred_masks"),
        ("mask.num_enc_masks=0", "mask.num_enc_masks"),
        ("mask.min_keep=256", "mask.min_keep"),
        ("mask.min_keep=60", "mask.pred_mask_scale"),
        ("data.batch_size=0", "data.batch_size"),
        ("optimization.epochs=0", "optimization.epochs"),
        ("optimization.warmup=-1", "optimization.warmup"),
        ("optimization.warmup=301", "optimization.warmup"),
        ("optimization.lr=0", "optimization.lr"),
        ("optimization.lr=-1e-3", "optimization.lr"),
        ("optimization.ema=[0.996,1.01]", "optimization.ema"),
        ("optimization.ema=[-0.1,1.0]", "optimization.ema"),
        ("optimization.ema=[1.0,0.996]", "optimization.ema"),
        ("meta.model_name=vit_hug", "meta.model_name"),
        ("mask.strategy=blocks", "mask.strategy"),
        ("optimization.loss=l2", "optimization.loss"),
        ("optimization.target=pixel", "optimization.target"),
        ("optimization.target_from=middle", "optimization.target_from"),
        ("optimization.on_nonfinite=ignore", "optimization.on_nonfinite"),
        ("mask.truncate=highest", "mask.truncate"),
        ("meta.init=kaiming", "meta.init"),
        ("optimization.accum_steps=0", "optimization.accum_steps"),
        ("logging.keep_last=0", "logging.keep_last"),
        ("meta.device=gpu", "meta.device"),
        ("meta.pred_emb_dim=100", "meta.pred_emb_dim"),
        ("data.val_fraction=1.0", "data.val_fraction"),
        ("optimization.grad_clip=0", "optimization.grad_clip"),
        ("data.shuffle_buffer=0", "data.shuffle_buffer"),
        ("optimization.lr_scaling=quadratic", "optimization.lr_scaling"),
        ("optimization.lr_reference_batch=0", "optimization.lr_reference_batch"),
    ],
)
def test_validate__impossible_value_error_names_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    msg = str(err.value)
    assert key in msg and "\n" not in msg
    assert ";" in msg  # every message says what to do about it


def test_validate__crop_size_error_suggests_a_multiple():
    with pytest.raises(ConfigError, match=r"multiple of 14 \(e\.g\. 224\)"):
        load_config(None, ["data.crop_size=225"])


def test_validate__checks_configs_built_in_code():
    cfg = Config()
    cfg.optimization.warmup = 500
    with pytest.raises(ConfigError, match="optimization.warmup"):
        validate(cfg)
    assert validate(Config()) == Config()
    assert config_from_dict({"optimization": {"warmup": 500}}, check=False).optimization.warmup == 500


def test_validate__edge_values_accepted():
    cfg = load_config(
        None,
        [
            "optimization.warmup=300",
            "optimization.warmup=0",
            "optimization.ema=[1.0,1.0]",
            "mask.pred_mask_scale=[1.0,1.0]",
            "meta.device=cuda:1",
            "meta.predictor_heads=4",
            "meta.pred_emb_dim=100",
        ],
    )
    assert cfg.meta.predictor_heads == 4


def test_save_load__round_trip_equal(tmp_path):
    cfg = load_config(
        write(tmp_path, REFERENCE_YAML),
        [
            "optimization.grad_clip=1.0",
            "data.dataset=folder:/x y",
            "mask.strategy=random",
            "optimization.max_minutes=20",
            "meta.predictor_heads=8",
        ],
    )
    out = tmp_path / "sub" / "saved.yaml"
    save_config(cfg, out)
    assert load_config(out) == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg
    plain = yaml.safe_load(out.read_text())
    assert plain["mask"]["enc_mask_scale"] == [0.8, 0.95]
    assert list(plain) == ["meta", "data", "mask", "optimization", "logging"]


def test_config_to_dict__plain_yaml_types():
    d = config_to_dict(Config())
    assert d["optimization"]["ema"] == [0.996, 1.0] and isinstance(d["optimization"]["ema"], list)
    yaml.safe_dump(d)  # no Python-specific tags needed


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_recipes__every_file_loads_and_validates(path):
    cfg = load_config(path)
    validate(cfg)
    assert path.read_text().startswith("#"), "recipes start with a header comment"


def test_recipes__reference_files_match_section_3_6():
    expect = {  # model, patch, crop, batch per GPU, epochs, warmup, predictor depth
        "in1k_vith14_ep300": ("vit_huge", 14, 224, 128, 300, 40, 12),
        "in1k_vith16-448_ep300": ("vit_huge", 16, 448, 16, 300, 40, 12),
        "in22k_vith14_ep66": ("vit_huge", 14, 224, 32, 66, 3, 12),
        "in22k_vitg16_ep44": ("vit_giant", 16, 224, 16, 44, 3, 16),
    }
    base = config_to_dict(Config())
    for name, (model, patch, crop, bs, epochs, warmup, depth) in expect.items():
        raw = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
        assert set(raw) == {"meta", "data", "mask", "optimization", "logging"}
        cfg = load_config(CONFIG_DIR / f"{name}.yaml")
        assert (
            cfg.meta.model_name,
            cfg.mask.patch_size,
            cfg.data.crop_size,
            cfg.data.batch_size,
            cfg.optimization.epochs,
            cfg.optimization.warmup,
            cfg.meta.pred_depth,
        ) == (model, patch, crop, bs, epochs, warmup, depth)
        got = config_to_dict(cfg)
        shared = {
            "meta": ["pred_emb_dim", "use_bfloat16", "copy_data", "load_checkpoint"],
            "data": ["crop_scale", "num_workers", "image_folder", "color_jitter_strength"],
            "mask": [
                "enc_mask_scale",
                "pred_mask_scale",
                "aspect_ratio",
                "min_keep",
                "num_pred_masks",
                "num_enc_masks",
                "allow_overlap",
            ],
            "optimization": ["ema", "lr", "start_lr", "final_lr", "weight_decay", "final_weight_decay", "ipe_scale"],
        }
        for section, keys in shared.items():
            for key in keys:
                assert got[section][key] == base[section][key], f"{name}: {section}.{key}"
                assert key in raw[section], f"{name} lacks reference key {section}.{key}"
    assert load_config(CONFIG_DIR / "in1k_vith14_ep300.yaml").optimization == Config().optimization


def test_recipes__small_configs_name_their_datasets():
    from openjepa.data import parse_data_spec

    for name, data in (("cifar10_vit_tiny_p4", "cifar10"), ("imagenette64_vit_tiny_p8", "imagenette")):
        cfg = load_config(CONFIG_DIR / f"{name}.yaml")
        assert cfg.meta.model_name == "vit_tiny" and cfg.meta.depth == 6 and cfg.meta.use_bfloat16 is False
        # small recipes run a slower target than the reference's 0.996 -> 1, and a lower peak lr
        assert cfg.optimization.ema[0] >= 0.998 and cfg.optimization.ema[1] == 1.0 and cfg.optimization.lr == 5e-4
        assert cfg.data.crop_size // cfg.mask.patch_size == 8
        assert cfg.data.dataset == data and parse_data_spec(cfg.data.dataset).kind == "named"
    demo = load_config(CONFIG_DIR / "demo.yaml")
    assert demo.data.dataset == "objects:4000" and demo.data.num_workers == 0  # generated: no download
    assert parse_data_spec(demo.data.dataset).kind != "named"


def test_scale_out_keys__defaults_overrides_and_types(tmp_path):
    cfg = load_config(None)
    assert (cfg.meta.fsdp, cfg.meta.activation_checkpointing) == (False, False)
    assert cfg.data.shuffle_buffer == 1000
    assert (cfg.optimization.lr_scaling, cfg.optimization.lr_reference_batch) == ("none", 2048)
    cfg = load_config(
        None,
        [
            "meta.fsdp=true",
            "meta.activation_checkpointing=true",
            "data.shuffle_buffer=64",
            "optimization.lr_scaling=sqrt",
            "optimization.lr_reference_batch=256",
            "data.dataset=shards:/data/shard-{000000..000009}.tar",
        ],
    )
    assert cfg.meta.fsdp is True and cfg.meta.activation_checkpointing is True
    assert cfg.data.dataset == "shards:/data/shard-{000000..000009}.tar"
    assert (cfg.data.shuffle_buffer, cfg.optimization.lr_scaling, cfg.optimization.lr_reference_batch) == (
        64,
        "sqrt",
        256,
    )
    with pytest.raises(ConfigError, match="meta.fsdp"):
        load_config(None, ["meta.fsdp=yes please"])
    path = tmp_path / "cfg.yaml"
    save_config(cfg, path)
    assert load_config(path) == cfg


def test_lr_scale__none_by_default_linear_and_sqrt_relative_to_the_reference_batch():
    from openjepa.train.loop import lr_scale

    assert lr_scale(load_config(None), 512) == 1.0  # the reference: lr 1e-3 whatever the batch
    assert lr_scale(load_config(None, ["optimization.lr_scaling=linear"]), 512) == 0.25
    assert lr_scale(load_config(None, ["optimization.lr_scaling=sqrt"]), 512) == 0.5
    assert lr_scale(load_config(None, ["optimization.lr_scaling=linear"]), 2048) == 1.0
