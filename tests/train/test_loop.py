"""The pretraining loop on tiny data: outputs, EMA, resume, refusal to overwrite, non-finite losses."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from openjepa.config import load_config
from openjepa.core.checkpoint import list_checkpoints, load_checkpoint, safe_load
from openjepa.models.ijepa import IJEPA
from openjepa.train import Schedule, make_optimizer, train_step
from openjepa.train.loop import NonFiniteLossError, RunExistsError, fit

TINY = [
    "meta.model_name=vit_tiny",
    "meta.depth=1",
    "meta.pred_depth=1",
    "meta.pred_emb_dim=48",
    "meta.use_bfloat16=false",
    "data.crop_size=32",
    "data.batch_size=4",
    "data.num_workers=0",
    "mask.patch_size=4",
    "mask.min_keep=4",
    "mask.pred_mask_scale=[0.15,0.2]",
    "optimization.epochs=2",
    "optimization.warmup=1",
    "logging.log_freq=2",
    "logging.tensorboard=false",
    "logging.plots=false",
    "logging.collapse_every_steps=0",
]


def tiny_cfg(folder, *more):
    return load_config(None, TINY + ["data.dataset=shapes:24", f"logging.folder={folder}", *more])


def _params(folder):
    state = load_checkpoint(list_checkpoints(folder)[-1][1])
    return {f"{part}.{k}": v for part in ("encoder", "predictor", "target_encoder") for k, v in state[part].items()}


def test_fit__reference_schema_yaml_on_image_folder_writes_what_the_reference_writes(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "imgs" / "train" / cls).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
                tmp_path / "imgs" / "train" / cls / f"{i}.png"
            )
    ref_cfg = {
        "meta": {
            "model_name": "vit_tiny",
            "pred_depth": 1,
            "pred_emb_dim": 48,
            "use_bfloat16": False,
            "load_checkpoint": False,
            "read_checkpoint": None,
            "copy_data": False,
        },
        "data": {
            "root_path": str(tmp_path),
            "image_folder": "imgs",
            "crop_size": 32,
            "crop_scale": [0.3, 1.0],
            "batch_size": 4,
            "num_workers": 0,
            "pin_mem": False,
            "use_horizontal_flip": False,
            "use_color_distortion": False,
            "use_gaussian_blur": False,
            "color_jitter_strength": 0.0,
        },
        "mask": {
            "patch_size": 4,
            "num_enc_masks": 1,
            "num_pred_masks": 4,
            "enc_mask_scale": [0.85, 1.0],
            "pred_mask_scale": [0.15, 0.2],
            "aspect_ratio": [0.75, 1.5],
            "min_keep": 4,
            "allow_overlap": False,
        },
        "optimization": {
            "ema": [0.996, 1.0],
            "ipe_scale": 1.0,
            "weight_decay": 0.04,
            "final_weight_decay": 0.4,
            "epochs": 2,
            "warmup": 1,
            "start_lr": 2e-4,
            "lr": 1e-3,
            "final_lr": 1e-6,
        },
        "logging": {"folder": str(tmp_path / "run"), "write_tag": "jepa"},
    }
    path = tmp_path / "ref.yaml"
    path.write_text(yaml.safe_dump(ref_cfg))
    cfg = load_config(path, ["meta.depth=1", "logging.tensorboard=false"])
    result = fit(cfg, progress=False)
    run = tmp_path / "run"
    assert result.steps == 4 and result.epochs_completed == 2  # 10 images // 4 = 2 steps per epoch
    assert (run / "params-ijepa.yaml").exists()
    assert yaml.safe_load((run / "params-ijepa.yaml").read_text())["data"]["root_path"] == str(tmp_path)
    with open(run / "jepa_r0.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "itr", "loss", "mask-A", "mask-B", "time (ms)"]
    assert [r[:2] for r in rows[1:]] == [["1", "0"], ["1", "1"], ["2", "0"], ["2", "1"]]
    ref = safe_load(run / "jepa-latest.pth.tar")
    assert set(ref) == {
        "encoder",
        "predictor",
        "target_encoder",
        "opt",
        "scaler",
        "epoch",
        "loss",
        "batch_size",
        "world_size",
        "lr",
    }
    assert ref["epoch"] == 2 and all(k.startswith("module.") for k in ref["encoder"])
    assert load_checkpoint(result.checkpoint)["config"]["data"]["image_folder"] == "imgs"


def test_step__target_encoder_moves_by_ema_only_and_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    model = IJEPA.build("vit_tiny", 8, 32, pred_depth=1, pred_emb_dim=48, depth=1)
    opt = make_optimizer(model.encoder, model.predictor)
    imgs = torch.randn(4, 3, 32, 32)
    masks_enc = [torch.tensor([[0, 1, 2, 4, 5, 6]] * 4)]
    masks_pred = [torch.tensor([[10, 11]] * 4), torch.tensor([[14, 15]] * 4)]
    losses = []
    for _ in range(15):
        before_t = [p.clone() for p in model.target_encoder.parameters()]
        r = train_step(model, opt, [(imgs, masks_enc, masks_pred)], lr=1e-3, wd=0.04, momentum=0.99)
        losses.append(r.loss.item())
        assert all(p.grad is None for p in model.target_encoder.parameters())
        for old, new, online in zip(before_t, model.target_encoder.parameters(), model.encoder.parameters()):
            assert torch.allclose(new, 0.99 * old + 0.01 * online, atol=1e-7)
    assert losses[-1] < 0.5 * losses[0]


def test_fit__refuses_to_overwrite_an_existing_run_without_resume(tmp_path):
    fit(tiny_cfg(tmp_path / "run", "optimization.max_steps=2"), progress=False)
    with pytest.raises(RunExistsError, match="--resume"):
        fit(tiny_cfg(tmp_path / "run", "optimization.max_steps=2"), progress=False)


def test_resume__stopped_mid_epoch_then_resumed_equals_uninterrupted_bitwise(tmp_path):
    full = fit(tiny_cfg(tmp_path / "full", "optimization.epochs=2"), progress=False)
    assert full.steps == 12
    part = fit(tiny_cfg(tmp_path / "part", "optimization.epochs=2", "optimization.max_steps=4"), progress=False)
    assert part.steps == 4 and part.stop_reason == "max_steps"
    resumed = fit(tiny_cfg(tmp_path / "part", "optimization.epochs=2"), resume=True, progress=False)
    assert resumed.steps == 12
    a, b = _params(tmp_path / "full"), _params(tmp_path / "part")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run diverged from the uninterrupted one"
    with open(tmp_path / "part" / "metrics.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r["loss"]]
    assert steps == list(range(1, 13))


def test_fit__regulariser_schedule_sets_each_steps_weight_scale_and_resumes_it(tmp_path, monkeypatch):
    seen = []
    original = IJEPA.forward

    def recording(self, *args):
        seen.append(float(self.reg_scale))
        return original(self, *args)

    monkeypatch.setattr(IJEPA, "forward", recording)
    fading = ("optimization.var_weight=1.0", "optimization.cov_weight=0.04", "optimization.reg_final_scale=0.0")
    fit(tiny_cfg(tmp_path / "part", *fading, "optimization.max_steps=5"), progress=False)
    fit(tiny_cfg(tmp_path / "part", *fading), resume=True, progress=False)
    expected = [Schedule(6, 2, 1, reg_final_scale=0.0).reg_scale(step) for step in range(1, 13)]
    assert seen == pytest.approx(expected) and seen[0] > 0.9 and seen[-1] == 0.0


def test_fit__non_finite_loss_stops_naming_the_step_and_the_last_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = IJEPA.forward

    def poisoned(self, *args):
        calls["n"] += 1
        loss = original(self, *args)
        return loss * float("nan") if calls["n"] >= 5 else loss

    monkeypatch.setattr(IJEPA, "forward", poisoned)
    with pytest.raises(NonFiniteLossError, match="non-finite at step 5") as e:
        fit(tiny_cfg(tmp_path / "run", "logging.checkpoint_every_steps=2"), progress=False)
    assert "ckpt-step00000004.pt" in str(e.value)
    assert [s for s, _ in list_checkpoints(tmp_path / "run")][-1] == 4


def test_fit__stop_reason_is_the_loops_and_only_an_unsaved_last_step_is_checkpointed(tmp_path):
    run = tmp_path / "run"
    part = fit(tiny_cfg(run, "optimization.max_steps=6"), progress=False)  # max_steps at the end of epoch 1
    assert (part.steps, part.epochs_completed, part.stop_reason) == (6, 1, "max_steps")
    assert load_checkpoint(part.checkpoint)["reason"] == "max_steps"  # the epoch checkpoint, rewritten
    done = fit(tiny_cfg(run), resume=True, progress=False)
    assert (done.steps, done.stop_reason) == (12, "completed")
    assert load_checkpoint(done.checkpoint)["reason"] == "epoch"  # already saved at the last step: not rewritten
    written = done.checkpoint.stat().st_mtime_ns
    again = fit(tiny_cfg(run), resume=True, progress=False)
    assert (again.steps, again.stop_reason, again.checkpoint) == (12, "completed", done.checkpoint)
    assert done.checkpoint.stat().st_mtime_ns == written
    timed = fit(tiny_cfg(tmp_path / "timed", "optimization.max_minutes=1e-9"), progress=False)
    assert (timed.steps, timed.stop_reason) == (1, "max_minutes")
    assert load_checkpoint(timed.checkpoint)["reason"] == "max_minutes"


def test_fit__checkpoint_every_epochs_saves_every_nth_epoch_and_the_last(tmp_path):
    result = fit(
        tiny_cfg(
            tmp_path / "run", "optimization.epochs=3", "logging.checkpoint_every_epochs=2", "logging.keep_last=10"
        ),
        progress=False,
    )
    assert result.steps == 18  # 24 images / batch 4 = 6 steps per epoch
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [12, 18]  # epoch 2, then the last (epoch 3)
    with pytest.raises(ValueError, match="checkpoint_every_epochs"):
        tiny_cfg(tmp_path / "bad", "logging.checkpoint_every_epochs=0")


def test_fit__knn_monitor_logs_held_out_accuracy_every_epoch(tmp_path):
    from openjepa.evaluate.runner import knn_monitor

    cfg = tiny_cfg(tmp_path / "run", "logging.eval_every_epochs=1")
    fit(cfg, progress=False, on_epoch_end=knn_monitor("shapes:64", 32, max_train=64, max_test=16))
    with open(tmp_path / "run" / "metrics.csv") as f:
        knn = [float(r["knn_top1"]) for r in csv.DictReader(f) if r.get("knn_top1")]
    assert len(knn) == 2 and all(0.0 <= v <= 1.0 for v in knn)


@pytest.mark.parametrize(
    "recipe", ["demo", "cifar10_vit_tiny_p4", "imagenette64_vit_tiny_p8", "imagenette64_vit_tiny_p4"]
)
def test_fit__shipped_small_recipes_train(recipe, tmp_path):
    from openjepa.config import recipe_path
    from tests.conftest import DATA_DIR

    cfg = load_config(
        recipe_path(recipe),
        [
            f"logging.folder={tmp_path / 'run'}",
            "optimization.max_steps=2",
            "meta.depth=1",
            "data.batch_size=8",
            "data.num_workers=0",
            "logging.tensorboard=false",
        ],
    )
    copies = {"cifar10": "cifar10_32px.npz", "imagenette": "imagenette2_64px.npz"}  # no download in tests
    if cfg.data.dataset in copies or cfg.data.dataset.endswith(".npz"):
        path = DATA_DIR / copies.get(cfg.data.dataset, cfg.data.dataset.rsplit("/", 1)[-1])
        if not path.exists():
            pytest.skip(f"{path} not found (the shared datasets live in ../shared/data)")
        cfg.data.dataset = str(path)
    result = fit(cfg, progress=False)
    assert result.steps == 2 and torch.isfinite(torch.tensor(result.last_loss))
