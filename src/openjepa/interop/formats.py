"""One in-memory form for every checkpoint format, with format detection, readers and writers.

Formats: "openjepa" (our run checkpoint `.pt`, or a run folder: its newest checkpoint),
"reference" (facebookresearch/ijepa `.pth.tar`), "hf" (a transformers I-JEPA folder), "timm"
(a timm ViT state dict, `.pth`/`.bin`/`.safetensors`) and "safetensors" (our encoder-only export).
Only openjepa and reference files hold all three networks; the others hold one encoder.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.checkpoint import FORMAT, FORMAT_VERSION, CheckpointError, atomic_save, find_resumable, verify_checkpoint
from ._util import (
    WHICH_KEY,
    add_module_prefix,
    check_which,
    encoder_arch,
    is_state_dict,
    load_torch_file,
    logger,
    strip_module_prefix,
)
from .detect import detect_dict, detect_format, detect_path
from .hf import hf_to_encoder_state_dict, is_hf_folder, load_hf, save_hf
from .reference import (
    REFERENCE_KEYS,
    config_for_arch,
    infer_arch,
    infer_encoder_arch,
    load_reference_checkpoint,
    to_reference_checkpoint,
)
from .safetensors_io import (
    load_encoder_safetensors,
    save_encoder_safetensors,
)
from .timm_export import load_timm, save_timm, timm_to_encoder_state_dict

FORMATS = ("openjepa", "reference", "hf", "timm", "safetensors")
_NETS = ("encoder", "predictor", "target_encoder")

__all__ = ["FORMATS", "Weights", "detect_format", "read_weights", "write_weights"]


@dataclass
class Weights:
    """The networks of a checkpoint in any format, with plain (reference) parameter names.

    Two-encoder sources fill `context` and `target` (and `predictor` when present); one-encoder
    sources fill `single`, with `stored_which` saying which encoder it was when the file records it.
    `arch` holds the encoder keys of IJEPA.arch(), plus the predictor keys when there is a predictor.
    """

    format: str
    source: str
    arch: dict
    context: dict | None = None
    target: dict | None = None
    predictor: dict | None = None
    single: dict | None = None
    stored_which: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def is_single(self) -> bool:
        return self.single is not None

    @property
    def is_full(self) -> bool:
        """Has the context encoder, the target encoder and the predictor (a resumable checkpoint)."""
        return self.context is not None and self.target is not None and self.predictor is not None

    def encoder(self, which: str = "target") -> tuple[dict, str | None]:
        """(state dict, which encoder it is) for `which`; one-encoder sources give their only encoder."""
        check_which(which)
        if self.single is not None:
            if self.stored_which is not None and self.stored_which != which:
                logger.warning(
                    "%s holds only the %s encoder; using it although which=%r was asked",
                    self.source,
                    self.stored_which,
                    which,
                )
            return self.single, self.stored_which
        sd = self.target if which == "target" else self.context
        if sd is None:
            other = "context" if which == "target" else "target"
            raise CheckpointError(
                f"{self.source} has no {which} encoder ({WHICH_KEY[which]}); it has only the "
                f"{other} one: pass which={other!r} (--which {other})"
            )
        return sd, which

    def encoder_slots(self) -> tuple[dict, dict]:
        """(context, target) state dicts; a one-encoder source fills both with its encoder."""
        if self.single is not None:
            return self.single, self.single
        ctx = self.context if self.context is not None else self.target
        tgt = self.target if self.target is not None else self.context
        assert ctx is not None and tgt is not None  # every reader fills at least one encoder
        return ctx, tgt


# ------------------------------------------------------------------------------------------- readers


def _check_heads(arch: dict, num_heads: int | None, source: str) -> dict:
    if num_heads is not None and int(num_heads) != arch["num_heads"]:
        raise CheckpointError(
            f"{source} records {arch['num_heads']} attention heads, but num_heads={num_heads} "
            f"was given; drop --num-heads or fix the file"
        )
    return arch


def _read_openjepa(state: Mapping[str, Any], source: str, num_heads: int | None) -> Weights:
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{source} is not an openjepa checkpoint")
    if not isinstance(state.get("arch"), Mapping):
        raise CheckpointError(f"{source} has no 'arch' description")
    extra = {k: v for k, v in state.items() if k not in _NETS}
    if state.get("encoder_only"):
        arch = _check_heads(encoder_arch(state["arch"]), num_heads, source)
        sd = state.get("target_encoder") or state.get("encoder")
        return Weights("openjepa", source, arch, single=sd, stored_which=state.get("which"), extra=extra)
    arch = dict(state["arch"])
    _check_heads(encoder_arch(arch), num_heads, source)
    missing = [k for k in _NETS if not is_state_dict(state.get(k))]
    if missing:
        raise CheckpointError(f"{source} lacks {', '.join(missing)}")
    return Weights(
        "openjepa",
        source,
        arch,
        context=state["encoder"],
        target=state["target_encoder"],
        predictor=state["predictor"],
        extra=extra,
    )


def _read_reference(ckpt: Any, source: str, num_heads: int | None, predictor_heads: int | None) -> Weights:
    ref = load_reference_checkpoint(ckpt)
    ctx = ref["encoder"] if is_state_dict(ref.get("encoder")) else None
    tgt = ref["target_encoder"] if is_state_dict(ref.get("target_encoder")) else None
    pred = ref["predictor"] if is_state_dict(ref.get("predictor")) else None
    arch = infer_arch(ref, num_heads=num_heads, predictor_heads=predictor_heads)
    meta = {k: ref[k] for k in ("epoch", "loss", "batch_size", "world_size", "lr") if k in ref}
    extra = {
        "optimizer": ref.get("opt"),
        "scaler": ref.get("scaler"),
        "epoch": ref.get("epoch", 0),
        "reference_meta": meta,
    }
    if ctx is None or tgt is None:
        which = "target" if tgt is not None else "context"
        return Weights(
            "reference",
            source,
            arch,
            single=tgt if tgt is not None else ctx,
            stored_which=which,
            predictor=pred,
            extra=extra,
        )
    return Weights("reference", source, arch, context=ctx, target=tgt, predictor=pred, extra=extra)


def _meta_arch(meta: Mapping[str, str]) -> dict | None:
    if "arch" in meta:
        try:
            return encoder_arch(json.loads(meta["arch"]))
        except (ValueError, CheckpointError):
            return None
    return None


def _read_hf(src: Any, source: str, num_heads: int | None) -> Weights:
    if isinstance(src, Mapping) or Path(src).is_file():
        obj = src if isinstance(src, Mapping) else None
        if obj is None:
            p = Path(src)
            if p.suffix == ".safetensors":
                if is_hf_folder(p.parent):
                    return _read_hf(p.parent, source, num_heads)
                from safetensors import safe_open

                with safe_open(str(p), framework="pt") as f:
                    obj = {k: f.get_tensor(k) for k in f.keys()}
            else:
                obj = load_torch_file(p)
        sd = hf_to_encoder_state_dict(obj)
        arch = infer_encoder_arch(sd, num_heads=num_heads)
        return Weights("hf", source, arch, single=sd)
    sd, arch, meta = load_hf(src)
    _check_heads(arch, num_heads, source)
    if "which" not in meta:
        logger.warning(
            "%s does not record which encoder it holds; note that transformers' I-JEPA conversion "
            "script (behind the facebook/ijepa_* hub models) takes ckpt['encoder'], the context encoder, "
            "not the target (EMA) one the paper evaluates",
            source,
        )
    return Weights("hf", source, arch, single=sd, stored_which=meta.get("which"), extra={"metadata": meta})


def _read_timm(src: Any, source: str, num_heads: int | None) -> Weights:
    meta: dict[str, str]
    if isinstance(src, Mapping):
        sd, meta = timm_to_encoder_state_dict(src), {}
    else:
        sd, meta = load_timm(src)
    arch = _meta_arch(meta)
    if arch is not None:
        _check_heads(arch, num_heads, source)
    else:
        arch = infer_encoder_arch(sd, num_heads=num_heads)
    return Weights("timm", source, arch, single=sd, stored_which=meta.get("which"), extra={"metadata": meta})


def _read_safetensors(src: Any, source: str, num_heads: int | None) -> Weights:
    if isinstance(src, Mapping):
        raise CheckpointError("a safetensors export is read from its file path")
    sd, arch, meta = load_encoder_safetensors(src)
    _check_heads(arch, num_heads, source)
    return Weights("safetensors", source, arch, single=sd, stored_which=meta.get("which"), extra={"metadata": meta})


def read_weights(
    src: str | Path | Mapping[str, Any],
    from_format: str | None = None,
    num_heads: int | None = None,
    predictor_heads: int | None = None,
) -> Weights:
    """Read any supported checkpoint (path, folder or loaded dict); `from_format=None` detects it.

    Torch files are read once, memory-mapped, with `weights_only=True` (never arbitrary unpickling).
    """
    if from_format not in (None, "auto", *FORMATS):
        raise ValueError(f"unknown format {from_format!r}; choose one of {', '.join(FORMATS)}")
    source = "checkpoint dict" if isinstance(src, Mapping) else str(src)
    obj: Any = src  # what the readers get: the dict, or the path of a folder / safetensors file
    detected: str | None
    if isinstance(src, Mapping):
        detected = detect_dict(src) if from_format in (None, "auto") else from_format
    else:
        p = Path(src)
        if not p.exists():
            raise FileNotFoundError(f"checkpoint not found: {p}")
        detected = detect_path(p)
        if detected is None:  # a torch file: load it once, then look inside
            if from_format == "openjepa":
                verify_checkpoint(p)  # checksum sidecar, when there is one
            obj = load_torch_file(p)
            detected = detect_dict(obj)
            if detected == "openjepa" and from_format in (None, "auto"):
                verify_checkpoint(p)
    fmt = detected if from_format in (None, "auto") else from_format
    # our safetensors export is also a valid timm state dict, and a bare HF state dict is read by either
    if fmt != detected and not (fmt == "timm" and detected in ("hf", "safetensors")):
        raise CheckpointError(
            f"{source} looks like a {detected} checkpoint, not {fmt}; use --from {detected} (or --from auto)"
        )
    if fmt == "openjepa":
        if not isinstance(obj, Mapping):  # a run folder
            found = find_resumable(obj)
            if found is None:
                raise CheckpointError(f"no checkpoint in run folder {obj}")
            path, obj = found
            source = str(path)
            logger.info("using the newest checkpoint of the run folder: %s", path)
        return _read_openjepa(obj, source, num_heads)
    if fmt == "reference":
        return _read_reference(obj, source, num_heads, predictor_heads)
    if fmt == "hf":
        return _read_hf(obj, source, num_heads)
    if fmt == "timm":
        return _read_timm(obj, source, num_heads)
    return _read_safetensors(obj, source, num_heads)


# ------------------------------------------------------------------------------------------- writers


def _needs_predictor(w: Weights, to_format: str) -> CheckpointError:
    what = "only one encoder" if w.is_single else "no predictor"
    return CheckpointError(
        f"the {w.format} source {w.source} holds {what}, but a {to_format} training checkpoint needs the context "
        f"encoder, the target encoder and the predictor; pass encoder_only=True (--encoder-only) to write an "
        f"evaluation-only file without a predictor (its encoder slots filled from the source), or convert to "
        f"hf / timm / safetensors instead"
    )


def _openjepa_state(w: Weights, encoder_only: bool) -> dict:
    if w.is_full:
        extra = {k: v for k, v in w.extra.items() if k not in ("format", "format_version", "metadata")}
        state = {"format": FORMAT, "format_version": FORMAT_VERSION, **extra}
        state.setdefault("config", config_for_arch(w.arch, *_bs_lr(w)))
        state.setdefault("optimizer", None)
        state.setdefault("step", 0)
        state.setdefault("epoch", 0)
        state["arch"] = dict(w.arch)
        state.update(encoder=w.context, predictor=w.predictor, target_encoder=w.target)
        if w.format != "openjepa":
            state["source_format"] = w.format
        return state
    if not encoder_only:
        raise _needs_predictor(w, "openjepa")
    ctx, tgt = w.encoder_slots()
    arch = encoder_arch(w.arch)
    logger.warning(
        "writing an encoder-only openjepa checkpoint (no predictor): usable with load_encoder and "
        "evaluation, not to resume training"
    )
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "encoder_only": True,
        "arch": arch,
        "config": config_for_arch(arch),
        "encoder": ctx,
        "target_encoder": tgt,
        "which": w.stored_which if w.is_single else None,
        "source_format": w.format,
        "step": w.extra.get("step", 0),
        "epoch": w.extra.get("epoch", 0),
    }


def _bs_lr(w: Weights) -> tuple[Any, Any]:
    meta = w.extra.get("reference_meta") or {}
    return meta.get("batch_size"), meta.get("lr")


def _reference_state(w: Weights, encoder_only: bool) -> dict:
    if w.is_full:
        state = dict(w.extra)
        state.update(encoder=w.context, predictor=w.predictor, target_encoder=w.target)
        return to_reference_checkpoint(state)
    if not encoder_only:
        raise _needs_predictor(w, "reference")
    ctx, tgt = w.encoder_slots()
    logger.warning(
        "writing a reference-layout checkpoint without a predictor: ckpt['target_encoder'] serves "
        "downstream use; the reference code cannot resume training from it"
    )
    meta = w.extra.get("reference_meta") or {}
    out = {
        "encoder": add_module_prefix(ctx),
        "target_encoder": add_module_prefix(tgt),
        "opt": None,
        "scaler": None,
        "epoch": w.extra.get("epoch", 0),
        "loss": meta.get("loss", 0.0),
        "batch_size": meta.get("batch_size"),
        "world_size": meta.get("world_size", 1),
        "lr": meta.get("lr"),
    }
    return {k: out[k] for k in REFERENCE_KEYS if k in out}


def write_weights(
    w: Weights, dst: str | Path, to_format: str, which: str = "target", encoder_only: bool = False
) -> Path:
    """Write `w` as `to_format` at `dst` (a file, or a folder for "hf"); returns the path written."""
    if to_format not in FORMATS:
        raise ValueError(f"unknown format {to_format!r}; choose one of {', '.join(FORMATS)}")
    check_which(which)
    dst = Path(dst)
    if to_format == "openjepa":
        atomic_save(_openjepa_state(w, encoder_only), dst)
        return dst
    if to_format == "reference":
        atomic_save(_reference_state(w, encoder_only), dst)
        return dst
    sd, used = w.encoder(which)
    sd = strip_module_prefix(sd)
    arch = encoder_arch(w.arch)
    meta = {"openjepa_layout": to_format, "source_format": w.format, "arch": json.dumps(arch, sort_keys=True)}
    if used is not None:
        meta["which"] = used
    if to_format == "hf":
        return save_hf(sd, arch, dst, metadata=meta)
    if to_format == "timm":
        return save_timm(sd, arch, dst, metadata=meta)
    return save_encoder_safetensors(sd, arch, dst, which=used, metadata={"source_format": w.format})
