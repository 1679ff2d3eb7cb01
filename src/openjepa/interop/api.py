"""`load_encoder`: one call from any checkpoint (or a random init) to a ready-to-use frozen encoder."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from PIL import Image
from torch.overrides import TorchFunctionMode
from tqdm.auto import tqdm

from ..core.checkpoint import CheckpointError
from ..data.images import image_extensions, read_rgb, scan_images
from ..data.transforms import make_eval_transforms
from ..models.pooling import POOLINGS, pool_features
from ..models.registry import ENCODER_SPECS
from ..models.vision_transformer import VisionTransformer
from ._util import check_fits, check_which, encoder_arch, logger, strip_module_prefix
from .formats import read_weights

__all__ = ["Encoder", "load_encoder", "make_preprocess", "list_images", "POOLINGS"]

RANDOM_PREFIX = "random:"


def make_preprocess(img_size: Sequence[int] | int, resize_ratio: float = 1.0) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> normalised tensor at the encoder's size: bicubic resize, centre crop, ImageNet mean/std."""
    return make_eval_transforms(img_size, resize_ratio=resize_ratio)


def list_images(folder: str | Path) -> list[Path]:
    """All image files under `folder`, recursively, as absolute paths in sorted order.

    The listing is data/images.py `scan_images` (its extensions; hidden files and folders skipped),
    so it is the file list of the image-folder datasets and of `openjepa index` too.
    """
    files, _ = scan_images(Path(folder))
    if not files:
        raise ValueError(f"no images ({', '.join(sorted(image_extensions()))}) found under {folder}")
    return [Path(f) for f in files]


class Encoder(VisionTransformer):
    """A frozen I-JEPA encoder (a `VisionTransformer`, reference parameter names) ready for features.

    Attributes:
        preprocess: torchvision transform, PIL image -> normalised (3, H, W) tensor at the encoder's
            size (bicubic resize of the shorter side, centre crop, ImageNet mean/std).
        meta: dict with `source`, `format`, `which` (target / context / random / None when the file
            does not say), `arch` (IJEPA.arch() encoder keys) and `fingerprint` (of the weights).
    `encoder(x)` returns all normed patch tokens (B, N, D); `embed(...)` returns pooled features.
    """

    def __init__(
        self, arch: Mapping[str, Any], meta: Mapping[str, Any] | None = None, resize_ratio: float = 1.0
    ) -> None:
        a = encoder_arch(arch)
        super().__init__(
            img_size=a["img_size"],
            patch_size=a["patch_size"],
            embed_dim=a["embed_dim"],
            depth=a["depth"],
            num_heads=a["num_heads"],
            mlp_ratio=a["mlp_ratio"],
        )
        self.meta: dict[str, Any] = {"arch": a, **dict(meta or {})}
        self.preprocess = make_preprocess(a["img_size"], resize_ratio)

    # ------------------------------------------------------------------------------------- inputs
    def _batches(self, images: Any, batch_size: int) -> tuple[int, int, Iterator[torch.Tensor]]:
        """(number of images, number of batches, iterator of preprocessed batches)."""
        if isinstance(images, torch.Tensor):
            x = images[None] if images.ndim == 3 else images
            if x.ndim != 4:
                raise ValueError(f"expected a (B, 3, H, W) tensor batch, got shape {tuple(images.shape)}")
            n = len(x)
            return n, -(-n // batch_size), (x[i : i + batch_size] for i in range(0, n, batch_size))
        if isinstance(images, (str, os.PathLike)):
            p = Path(images)
            if p.is_dir():
                items: list[Any] = list(list_images(p))
            elif p.is_file():
                items = [p]
            else:
                raise FileNotFoundError(f"no such image or folder: {p}")
        elif isinstance(images, Image.Image):
            items = [images]
        elif isinstance(images, Iterable):
            items = list(images)
        else:
            raise TypeError(f"embed() takes PIL images, a tensor batch or a folder path, got {type(images).__name__}")
        if not items:
            raise ValueError("embed() got no images")

        def load(item: Any) -> torch.Tensor:
            if isinstance(item, torch.Tensor):
                return item
            if isinstance(item, (str, os.PathLike)):
                return self.preprocess(read_rgb(item))
            if isinstance(item, Image.Image):
                return self.preprocess(item.convert("RGB"))
            raise TypeError(f"cannot embed an item of type {type(item).__name__}")

        n = len(items)
        gen = (torch.stack([load(it) for it in items[i : i + batch_size]]) for i in range(0, n, batch_size))
        return n, -(-n // batch_size), gen

    # ------------------------------------------------------------------------------------ features
    @torch.no_grad()
    def embed(self, images: Any, batch_size: int = 64, pooling: str = "avg", progress: bool = True) -> torch.Tensor:
        """Features of images: (N, D) float32 on CPU.

        images: a list of PIL images (or image paths), a tensor batch already preprocessed
        ((B, 3, H, W), e.g. by `self.preprocess`), or a folder path (every image under it,
        recursively, in sorted path order). pooling: "avg" (mean of the last layer's normed patch
        tokens, the paper's linear-probe feature; (N, D)), "avg_last4" (the last 4 layers' means
        concatenated; (N, 4D)) or "patch" (all tokens; (N, T, D)).
        """
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n, n_batches, batches = self._batches(images, batch_size)
        device, dtype = self.pos_embed.device, self.pos_embed.dtype
        was_training = self.training
        self.eval()
        out: list[torch.Tensor] = []
        try:
            for x in tqdm(
                batches, total=n_batches, disable=not progress, desc=f"embed ({pooling})", dynamic_ncols=True
            ):
                out.append(pool_features(self, x.to(device=device, dtype=dtype), pooling).cpu())
        finally:
            self.train(was_training)
        feats = torch.cat(out)
        assert len(feats) == n
        return feats


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _requested_arch(
    base: Mapping[str, Any], model_name: str | None, patch_size: int | None, img_size: int | None
) -> dict:
    arch = encoder_arch(base)
    if model_name is not None:
        if model_name not in ENCODER_SPECS:
            raise ValueError(f"unknown model {model_name!r}; choose one of {', '.join(ENCODER_SPECS)}")
        spec = ENCODER_SPECS[model_name]
        arch.update(embed_dim=spec.embed_dim, depth=spec.depth, num_heads=spec.num_heads, mlp_ratio=spec.mlp_ratio)
    if patch_size is not None:
        arch["patch_size"] = int(patch_size)
    if img_size is not None:
        arch["img_size"] = [int(img_size), int(img_size)]
    return arch


class _MetaConstruction(TorchFunctionMode):
    """Create tensors on the meta device, except `linspace` (the drop-path schedule calls .item())."""

    def __init__(self, constructors: set) -> None:
        super().__init__()
        self.constructors = constructors

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in self.constructors and kwargs.get("device") is None:
            kwargs["device"] = "cpu" if func is torch.linspace else "meta"
        return func(*args, **kwargs)


def _empty_encoder(arch: dict, meta: dict, resize_ratio: float) -> Encoder:
    """An Encoder whose tensors are on the meta device: no random init of weights about to be replaced
    (that init alone takes ~17 s for ViT-H on two CPU cores). Falls back to a normal build."""
    try:
        from torch.utils._device import _device_constructors

        with _MetaConstruction(set(_device_constructors())):
            enc = Encoder(arch, meta, resize_ratio)
        if all(t.is_meta for t in enc.state_dict().values()):
            return enc
    except Exception as e:  # pragma: no cover - torch internals changed: build normally
        logger.debug("meta-device construction failed (%s); building normally", e)
    return Encoder(arch, meta, resize_ratio)


def _build_loaded(
    arch: dict, state_dict: Mapping[str, torch.Tensor], meta: dict, resize_ratio: float, dtype: torch.dtype, what: str
) -> Encoder:
    enc = _empty_encoder(arch, meta, resize_ratio)
    check_fits(
        enc.state_dict(), state_dict, f"the weights in {what} do not fit the requested architecture {_arch_str(arch)}"
    )
    # Own copies: never alias the caller's tensors or a memory-mapped file.
    sd = {k: (v.to(dtype, copy=True) if v.is_floating_point() else v.clone()) for k, v in state_dict.items()}
    enc.load_state_dict(sd, strict=True, assign=True)
    leftover = [n for n, t in [*enc.named_parameters(), *enc.named_buffers()] if t.is_meta]
    if leftover:  # pragma: no cover - only if a future module gains unsaved buffers
        raise CheckpointError(f"tensors {leftover} were not loaded")
    enc.pos_embed.requires_grad_(False)
    return enc


def _arch_str(a: Mapping[str, Any]) -> str:
    return (
        f"(patch {a['patch_size']}, img {a['img_size'][0]}, width {a['embed_dim']}, depth {a['depth']}, "
        f"heads {a['num_heads']}, mlp_ratio {a['mlp_ratio']:.4g})"
    )


def _random_encoder(
    spec: str,
    num_heads: int | None,
    patch_size: int | None,
    img_size: int | None,
    depth: int | None,
    seed: int,
    resize_ratio: float,
) -> Encoder:
    """The encoder of `"random:<model_name>"`: initialised as the reference does, seeded by `seed`."""
    name = spec[len(RANDOM_PREFIX) :]
    if name not in ENCODER_SPECS:
        raise ValueError(f"unknown model {name!r} in {spec!r}; choose one of {', '.join(ENCODER_SPECS)}")
    base = {"patch_size": 16, "img_size": 224, "embed_dim": 0, "depth": 0, "num_heads": 1, "mlp_ratio": 4.0}
    arch = _requested_arch(base, name, patch_size, img_size)
    if num_heads is not None:
        arch["num_heads"] = int(num_heads)
    if depth is not None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        arch["depth"] = int(depth)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        enc = Encoder(arch, {"source": spec, "format": "random", "which": "random"}, resize_ratio)
    logger.info("load_encoder: randomly initialised %s %s (seed %d)", name, _arch_str(arch), seed)
    return enc


def load_encoder(
    path_or_name: str | Path | Mapping[str, Any],
    which: str = "target",
    num_heads: int | None = None,
    device: str | torch.device = "cpu",
    *,
    from_format: str | None = None,
    model_name: str | None = None,
    patch_size: int | None = None,
    img_size: int | None = None,
    resize_ratio: float = 1.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    depth: int | None = None,
) -> Encoder:
    """Load a frozen encoder, in eval mode, from any supported source.

    path_or_name:
      - one of our run checkpoints (`.pt` with format "openjepa"), or a run folder (its newest
        checkpoint);
      - a reference `.pth.tar` (dict with encoder / target_encoder, with or without `module.`);
      - a safetensors encoder export (`openjepa convert --to safetensors`);
      - a Hugging Face I-JEPA folder (config.json + model.safetensors);
      - a timm state-dict file (`.pth` / `.bin` / `.safetensors`);
      - `"random:<model_name>"` (with `patch_size=`, `img_size=`, `seed=`, optionally `depth=` to
        match a shallower small-scale encoder): a randomly initialised encoder as the reference
        initialises it, the usual baseline;
      - or an already loaded checkpoint dict.
    which: for checkpoints holding both encoders, "target" (default) is the EMA target encoder,
      which the paper evaluates (appendix A.1) and the released checkpoints are meant to be used
      with; "context" is the encoder trained by gradient. One-encoder files (hf / timm /
      safetensors) give the encoder they hold, and say which one it was when they record it. The
      choice is logged and kept in `.meta["which"]`.
    num_heads: attention heads, needed only where the file does not record them and the width
      matches no preset (they are not in the weights).
    model_name / patch_size / img_size: the architecture you expect; if the weights do not fit it,
      a one-line CheckpointError lists each mismatched shape (name: expected vs got).
    Returns an `Encoder` (a VisionTransformer) with `.preprocess`, `.meta` and `.embed()`.
    """
    check_which(which)
    dev = _resolve_device(device)
    if isinstance(path_or_name, str) and path_or_name.startswith(RANDOM_PREFIX):
        enc = _random_encoder(path_or_name, num_heads, patch_size, img_size, depth, seed, resize_ratio).to(dtype)
    else:
        w = read_weights(path_or_name, from_format=from_format, num_heads=num_heads)
        sd, used = w.encoder(which)
        sd = strip_module_prefix(sd)
        arch = encoder_arch(w.arch)
        if model_name is not None or patch_size is not None or img_size is not None:
            arch = _requested_arch(arch, model_name, patch_size, img_size)
        meta = {"source": w.source, "format": w.format, "which": used}
        enc = _build_loaded(arch, sd, meta, resize_ratio, dtype, w.source)
        label = {
            "target": "target encoder (EMA; what the paper evaluates)",
            "context": "context encoder",
            None: "encoder (the file does not record whether target or context)",
        }.get(used, f"{used} encoder")
        logger.info("load_encoder: using the %s from %s [%s] %s", label, w.source, w.format, _arch_str(arch))
    from ..core.hashing import fingerprint

    enc.meta["fingerprint"] = fingerprint(enc.state_dict())
    enc.requires_grad_(False)
    return enc.to(dev).eval()
