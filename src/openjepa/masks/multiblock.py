"""Multi-block masking (I-JEPA): one context block and several target blocks per image.

Faithful to the reference's `MaskCollator` by default, quirks included (they shaped its results):
  * one uniform draw sets both the scale and the aspect ratio of a block;
  * blocks are clamped to (H-1)x(W-1) and their top-left corner never reaches the last row or
    column, so on a 16x16 grid the context block is always the top-left 15x15;
  * one block size per batch (per process), positions per image;
  * every mask is truncated to the batch minimum by keeping its lowest raster indices.
Each quirk has a switch for ablations. Unlike the reference, the whole batch is sampled with
tensor ops from an explicit generator, and settings that cannot be met raise an error up front
instead of silently letting the context overlap the targets.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import default_collate, get_worker_info

from ..core.seeding import derive_seed

logger = logging.getLogger("openjepa.masks")


class MaskSettingsError(ValueError):
    """Mask settings that can never produce valid masks."""


class MaskSamplingError(RuntimeError):
    """No valid context block was found within the retry budget."""


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


@dataclass(frozen=True)
class BlockSampler:
    """Block geometry on an H x W patch grid, with the reference's quirks as switches."""

    height: int
    width: int
    independent_scale_aspect: bool = False
    include_last_row_col: bool = False
    allow_full_size_blocks: bool = False

    def size_from_draws(
        self, r_scale: float, r_aspect: float, scale: Sequence[float], aspect: Sequence[float]
    ) -> tuple[int, int]:
        """Block (h, w) from uniform draws, exactly as the reference computes it."""
        s = scale[0] + r_scale * (scale[1] - scale[0])
        max_keep = int(self.height * self.width * s)
        ar = aspect[0] + r_aspect * (aspect[1] - aspect[0])
        h = int(round(math.sqrt(max_keep * ar)))
        w = int(round(math.sqrt(max_keep / ar)))
        hmax = self.height if self.allow_full_size_blocks else self.height - 1
        wmax = self.width if self.allow_full_size_blocks else self.width - 1
        return min(h, hmax), min(w, wmax)

    def sample_size(self, g: torch.Generator, scale: Sequence[float], aspect: Sequence[float]) -> tuple[int, int]:
        """One block size for the whole batch."""
        r = torch.rand(1, generator=g).item()
        ra = torch.rand(1, generator=g).item() if self.independent_scale_aspect else r
        return self.size_from_draws(r, ra, scale, aspect)

    def possible_sizes(self, scale: Sequence[float], aspect: Sequence[float]) -> set[tuple[int, int]]:
        """Every size the sampler can return (by a fine sweep of the draws)."""
        rs = np.linspace(0.0, 1.0, 2001)
        if self.independent_scale_aspect:
            return {self.size_from_draws(a, b, scale, aspect) for a in rs[::20] for b in rs[::20]}
        return {self.size_from_draws(r, r, scale, aspect) for r in rs}

    def position_range(self, h: int, w: int) -> tuple[int, int]:
        """Exclusive upper bounds for the top and left corner of an h x w block."""
        extra = 1 if self.include_last_row_col else 0
        # The reference draws randint(0, H - h): the last row/column is never a block's top/left
        # reach; a full-size block has exactly one position.
        return max(self.height - h + extra, 1), max(self.width - w + extra, 1)

    def rect_masks(self, top: torch.Tensor, left: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Boolean grids (..., H, W) for rectangles with the given corners."""
        rows = torch.arange(self.height)
        cols = torch.arange(self.width)
        r = (rows >= top[..., None]) & (rows < top[..., None] + h)  # (..., H)
        c = (cols >= left[..., None]) & (cols < left[..., None] + w)  # (..., W)
        return r[..., :, None] & c[..., None, :]


class MultiBlockMaskCollator:
    """Collate (image, label) samples and sample multi-block masks: returns (batch, masks_enc, masks_pred)."""

    # Which process of a distributed run this collator serves (set_rank): each rank draws its own
    # masks. Class attributes so that subclasses with their own __init__ inherit the single-process default.
    rank: int = 0
    world_size: int = 1

    def __init__(
        self,
        input_size: int | Sequence[int] = (224, 224),
        patch_size: int = 16,
        enc_mask_scale: Sequence[float] = (0.2, 0.8),
        pred_mask_scale: Sequence[float] = (0.2, 0.8),
        aspect_ratio: Sequence[float] = (0.3, 3.0),
        nenc: int = 1,
        npred: int = 2,
        min_keep: int = 4,
        allow_overlap: bool = False,
        *,
        seed: int = 0,
        independent_scale_aspect: bool = False,
        include_last_row_col: bool = False,
        allow_full_size_blocks: bool = False,
        truncate: str = "lowest",
        candidates_per_try: int = 20,
        max_tries: int = 50,
    ) -> None:
        ih, iw = _pair(input_size)
        if ih % patch_size or iw % patch_size:
            raise MaskSettingsError(
                f"input size {ih}x{iw} is not divisible by patch size {patch_size}; "
                f"use a crop size that is a multiple of {patch_size}"
            )
        self.blocks = BlockSampler(
            ih // patch_size, iw // patch_size, independent_scale_aspect, include_last_row_col, allow_full_size_blocks
        )
        self.height, self.width = self.blocks.height, self.blocks.width
        self.patch_size = patch_size
        self.enc_mask_scale = tuple(enc_mask_scale)
        self.pred_mask_scale = tuple(pred_mask_scale)
        self.aspect_ratio = tuple(aspect_ratio)
        self.nenc, self.npred = nenc, npred
        self.min_keep = min_keep
        self.allow_overlap = allow_overlap
        if truncate not in ("lowest", "random"):
            raise MaskSettingsError(f"mask truncate must be 'lowest' or 'random', got {truncate!r}")
        self.truncate = truncate
        self.candidates_per_try = candidates_per_try
        self.max_tries = max_tries
        self.seed = seed
        self.epoch = 0
        self.start_batch = 0
        self._calls = 0  # per process: DataLoader workers each hold their own copy
        self._check_settings()

    # ----------------------------------------------------------------- settings
    def _check_settings(self) -> None:
        def check_range(name: str, r: tuple, lo: float, hi: float) -> None:
            if len(r) != 2 or not (lo < r[0] <= r[1] <= hi):
                raise MaskSettingsError(f"mask.{name}={list(r)} must be two numbers with {lo} < min <= max <= {hi}")

        check_range("enc_mask_scale", self.enc_mask_scale, 0.0, 1.0)
        check_range("pred_mask_scale", self.pred_mask_scale, 0.0, 1.0)
        check_range("aspect_ratio", self.aspect_ratio, 0.0, math.inf)
        if self.nenc < 1 or self.npred < 1:
            raise MaskSettingsError(
                f"need at least one context and one target block, got "
                f"num_enc_masks={self.nenc}, num_pred_masks={self.npred}"
            )
        if self.min_keep < 0:
            raise MaskSettingsError(f"mask.min_keep must be >= 0, got {self.min_keep}")
        b = self.blocks
        pred_sizes = b.possible_sizes(self.pred_mask_scale, self.aspect_ratio)
        enc_sizes = b.possible_sizes(self.enc_mask_scale, (1.0, 1.0))
        for kind, sizes in (("target", pred_sizes), ("context", enc_sizes)):
            small = min(sizes, key=lambda s: s[0] * s[1])
            if small[0] < 1 or small[1] < 1:
                raise MaskSettingsError(
                    f"{kind} blocks can be {small[0]}x{small[1]} patches on the {b.height}x{b.width} "
                    f"grid; raise mask.{'pred' if kind == 'target' else 'enc'}_mask_scale or use a "
                    f"smaller patch size"
                )
        tiny = [s for s in pred_sizes if s[0] * s[1] <= self.min_keep]
        if tiny:
            h, w = tiny[0]
            raise MaskSettingsError(
                f"target blocks of {h}x{w}={h * w} patches can never hold more than "
                f"mask.min_keep={self.min_keep} patches; lower mask.min_keep or raise mask.pred_mask_scale"
            )
        if self.allow_overlap:
            return
        # Best case for the context: every target piled on one spot, as far outside it as possible.
        for eh, ew in enc_sizes:
            for ph, pw in pred_sizes:
                keep = eh * ew - self._min_overlap(eh, ew, ph, pw)
                if keep <= self.min_keep:
                    raise MaskSettingsError(
                        f"a {eh}x{ew} context block minus one {ph}x{pw} target keeps at most {keep} "
                        f"patches, not more than mask.min_keep={self.min_keep}: these settings cannot "
                        f"be met; lower mask.min_keep or mask.pred_mask_scale, raise "
                        f"mask.enc_mask_scale, or set mask.allow_overlap=true"
                    )

    def _min_overlap(self, eh: int, ew: int, ph: int, pw: int) -> int:
        def axis(n_ctx: int, n_tgt: int, bound_ctx: int, bound_tgt: int) -> int:
            return min(
                max(0, min(c + n_ctx, t + n_tgt) - max(c, t)) for c in range(bound_ctx) for t in range(bound_tgt)
            )

        (ctop, cleft), (ttop, tleft) = self.blocks.position_range(eh, ew), self.blocks.position_range(ph, pw)
        return axis(eh, ph, ctop, ttop) * axis(ew, pw, cleft, tleft)

    # ----------------------------------------------------------------- seeding
    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Masks are a pure function of (seed, epoch, batch index); call before each epoch's loader."""
        self.epoch, self.start_batch, self._calls = epoch, start_batch, 0

    def set_rank(self, rank: int, world_size: int) -> None:
        """Give each of `world_size` processes its own mask stream (rank 0 of 1 is the single-process one)."""
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"set_rank needs 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.rank, self.world_size = int(rank), int(world_size)

    def _next_generator(self) -> torch.Generator:
        info = get_worker_info()
        # DataLoader hands batches to its workers round-robin, so this is the batch's index in the epoch.
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        batch_index = self.start_batch + worker + self._calls * workers
        self._calls += 1
        # The global micro-batch index: rank r's batch i is batch i * world + r of the epoch, so every
        # rank has its own stream and one process (rank 0 of 1) keeps the original one.
        global_index = batch_index * self.world_size + self.rank
        return torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, global_index))

    # ----------------------------------------------------------------- sampling
    def __call__(self, batch: list[Any]) -> tuple[Any, list[torch.Tensor], list[torch.Tensor]]:
        """Collate samples and sample masks for them, as the reference's collate_fn."""
        collated = default_collate(batch)
        masks_enc, masks_pred = self.sample(len(batch), self._next_generator())
        return collated, masks_enc, masks_pred

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Masks for a batch: nenc context masks (B, Kc) and npred target masks (B, Kp), flat indices."""
        g, b = generator, self.blocks
        p_size = b.sample_size(g, self.pred_mask_scale, self.aspect_ratio)
        e_size = b.sample_size(g, self.enc_mask_scale, (1.0, 1.0))
        pred_idx = torch.empty(batch_size, self.npred, p_size[0] * p_size[1], dtype=torch.long)
        ctx = torch.empty(batch_size, self.nenc, self.height, self.width, dtype=torch.bool)
        todo = torch.arange(batch_size)
        for _ in range(self.max_tries):
            idx, grids = self._sample_targets(len(todo), p_size, g)
            allowed = ~grids.any(1) if not self.allow_overlap else torch.ones_like(grids[:, 0])
            ok = torch.ones(len(todo), dtype=torch.bool)
            for k in range(self.nenc):
                found, c = self._sample_context(allowed, e_size, g)
                ctx[todo, k] = c
                ok &= found
            pred_idx[todo] = idx
            # Rare: no context position leaves enough patches; redraw that image's targets too
            # (the reference instead lets the context overlap the targets).
            todo = todo[~ok]
            if len(todo) == 0:
                break
        else:
            raise MaskSamplingError(
                f"no context block with more than min_keep={self.min_keep} patches outside the "
                f"targets after {self.max_tries} redraws; lower mask.min_keep, mask.pred_mask_scale "
                f"or mask.num_pred_masks, or set mask.allow_overlap=true"
            )
        masks_pred = [pred_idx[:, j] for j in range(self.npred)]  # equal sizes: nothing to truncate
        ctx = ctx.flatten(2)
        keep = int(ctx.sum(-1).min())
        masks_enc = [self._truncate(ctx[:, k], keep, g) for k in range(self.nenc)]
        return masks_enc, masks_pred

    def _sample_targets(self, n: int, size: tuple[int, int], g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = size
        top_hi, left_hi = self.blocks.position_range(h, w)
        top = torch.randint(0, top_hi, (n, self.npred), generator=g)
        left = torch.randint(0, left_hi, (n, self.npred), generator=g)
        offsets = (torch.arange(h)[:, None] * self.width + torch.arange(w)[None, :]).flatten()
        idx = (top * self.width + left)[..., None] + offsets  # (n, npred, h*w), ascending raster order
        return idx, self.blocks.rect_masks(top, left, h, w)

    def _sample_context(
        self, allowed: torch.Tensor, size: tuple[int, int], g: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """First valid position of an i.i.d. sequence per image (the law of the reference's retry loop).

        One candidate for everyone first, then `candidates_per_try` more only for the images that failed.
        """
        n = len(allowed)
        found = torch.zeros(n, dtype=torch.bool)
        out = torch.zeros_like(allowed)
        todo = torch.arange(n)
        for t in (1, self.candidates_per_try):
            cand, valid = self._context_candidates(allowed[todo], size, t, g)
            first = valid.int().argmax(1)
            out[todo] = cand[torch.arange(len(todo)), first]
            ok = valid.any(1)
            found[todo] = ok
            todo = todo[~ok]
            if len(todo) == 0:
                break
        return found, out

    def _context_candidates(
        self, allowed: torch.Tensor, size: tuple[int, int], t: int, g: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = size
        top_hi, left_hi = self.blocks.position_range(h, w)
        top = torch.randint(0, top_hi, (len(allowed), t), generator=g)
        left = torch.randint(0, left_hi, (len(allowed), t), generator=g)
        cand = self.blocks.rect_masks(top, left, h, w) & allowed[:, None]  # (n, t, H, W)
        return cand, cand.flatten(2).sum(-1) > self.min_keep

    def _truncate(self, mask: torch.Tensor, keep: int, g: torch.Generator) -> torch.Tensor:
        n_tok = mask.shape[1]
        pos = torch.arange(n_tok).expand_as(mask)
        if self.truncate == "lowest":
            return torch.where(mask, pos, pos + n_tok).sort(dim=1).values[:, :keep]
        noise = torch.rand(mask.shape, generator=g)
        chosen = torch.where(mask, noise, noise + 2.0).argsort(dim=1)[:, :keep]
        return chosen.sort(dim=1).values
