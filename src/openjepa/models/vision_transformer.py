"""I-JEPA Vision Transformer encoder and predictor, state-dict compatible with the reference.

Both are built from timm's `PatchEmbed` and `Block`, whose parameter names (`patch_embed.proj`,
`blocks.N.norm1`, `attn.qkv`, `attn.proj`, `mlp.fc1`, `mlp.fc2`, ...) are the reference's, so a
reference checkpoint loads with `strict=True` once its DDP `module.` prefix is removed.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Attention, Mlp, PatchEmbed
from timm.models.vision_transformer import Block

from ..masks.ops import apply_masks, repeat_interleave_batch
from .pos_embed import resize_pos_embed, sincos_2d

LayerNorm6 = partial(nn.LayerNorm, eps=1e-6)
INIT_MODES = ("reference", "depth_scaled", "patch_fan_in", "xavier")


def _to_2tuple(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    size = tuple(int(s) for s in size)
    if len(size) == 1:  # the reference passes img_size=[224]
        return (size[0], size[0])
    if len(size) != 2:
        raise ValueError(f"image size must be an int or (height, width), got {size}")
    return size


def _make_blocks(
    dim: int,
    depth: int,
    num_heads: int,
    mlp_ratio: float,
    qkv_bias: bool,
    drop_rate: float,
    attn_drop_rate: float,
    drop_path_rate: float,
    norm_layer: Callable[..., nn.Module],
) -> nn.ModuleList:
    dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]  # stochastic depth decay rule
    return nn.ModuleList(
        Block(
            dim=dim,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            proj_drop=drop_rate,
            attn_drop=attn_drop_rate,
            drop_path=dpr[i],
            # timm annotates norm_layer as a class but only calls it, so a partial works.
            norm_layer=norm_layer,  # type: ignore[arg-type]
        )
        for i in range(depth)
    )


def _init_module(m: nn.Module, std: float) -> None:
    # Bounds are absolute +-2 as in the reference, so they never bind at std 0.02.
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(m.weight, std=std, a=-2.0, b=2.0)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _init_weights(model: nn.Module, blocks: nn.ModuleList, std: float, mode: str) -> None:
    """Initialise like the reference trains (`reference`), with its depth rescale kept (`depth_scaled`),
    or with a small-scale option: a 1/sqrt(fan_in) patch embedding (`patch_fan_in`) or Xavier-uniform
    linears and patch embedding (`xavier`, as MAE initialises its ViT)."""
    if mode not in INIT_MODES:
        raise ValueError(f"init must be one of {INIT_MODES}, got {mode!r}")
    model.apply(partial(_init_module, std=std))
    if mode == "xavier":
        # At width 192, std 0.02 scales each linear's output by ~0.3 (sqrt(192) * 0.02), so a random
        # encoder stays close to its image-independent position embedding; Xavier scales by ~0.6-1.
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.xavier_uniform_(m.weight.view(m.weight.shape[0], -1))
    patch = getattr(getattr(model, "patch_embed", None), "proj", None)
    if mode == "patch_fan_in" and isinstance(patch, nn.Conv2d):
        # At std 0.02 a 4x4x3 patch (fan-in 48) embeds to ~0.14 per channel against the sin-cos
        # position's ~0.7, so content starts buried under position; 1/sqrt(fan_in) (torchvision's
        # and big_vision's ViT) puts it at ~1. At 14x14x3 (fan-in 588) the two inits differ less.
        fan_in = patch.in_channels * patch.kernel_size[0] * patch.kernel_size[1]
        nn.init.trunc_normal_(patch.weight, std=fan_in**-0.5, a=-2.0, b=2.0)
    if mode == "depth_scaled":
        # The reference model divides these by sqrt(2 * layer) but its training helper then
        # re-initialises every Linear, undoing it; "reference" therefore skips this step.
        for layer_id, blk in enumerate(blocks, start=1):
            attn, mlp = block_parts(blk)
            attn.proj.weight.data.div_(math.sqrt(2.0 * layer_id))
            mlp.fc2.weight.data.div_(math.sqrt(2.0 * layer_id))


def set_fused_attn(model: nn.Module, enabled: bool) -> nn.Module:
    """Switch every attention layer between SDPA (fused) and the explicit softmax(QK^T)V path."""
    for m in model.modules():
        if hasattr(m, "fused_attn") and hasattr(m, "qkv"):
            # A plain bool attribute; torch types Module.__setattr__ for tensors and modules only.
            m.fused_attn = enabled  # type: ignore[assignment]
    return model


def block_parts(blk: nn.Module) -> tuple[Attention, Mlp]:
    """The timm `Attention` and `Mlp` of a block from `_make_blocks` (timm types both as `nn.Module`)."""
    attn, mlp = blk.attn, blk.mlp
    assert isinstance(attn, Attention) and isinstance(mlp, Mlp), f"not a timm ViT block: {type(blk).__name__}"
    return attn, mlp


def mlp_width(blk: nn.Module) -> int:
    """Hidden width of a ViT block's MLP (its `fc1` outputs)."""
    fc1 = block_parts(blk)[1].fc1
    assert isinstance(fc1, nn.Linear)  # timm's Mlp builds a Conv2d only with use_conv, never used here
    return fc1.out_features


def _plain_block(blk: nn.Module) -> bool:
    """A timm Block whose forward is exactly pre-norm attention + MLP (what the fast paths re-implement)."""
    attn = getattr(blk, "attn", None)
    return (
        type(blk) is Block
        and type(attn) is Attention
        and getattr(attn, "gate", None) is None
        and not (
            blk.training
            and (
                attn.attn_drop.p > 0
                or attn.proj_drop.p > 0
                or getattr(blk.mlp.drop1, "p", 0) > 0
                or getattr(blk.mlp.drop2, "p", 0) > 0
            )
        )
    )


def _attend(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Multi-head attention of (B, H, M, hd) queries over (B, H, N, hd) keys/values -> (B, M, H*hd)."""
    q, k = attn.q_norm(q), attn.k_norm(k)
    if attn.fused_attn:
        o = F.scaled_dot_product_attention(q, k, v)
    else:
        a = (q * attn.scale) @ k.transpose(-2, -1)
        o = a.softmax(dim=-1) @ v
    b, _, m, _ = q.shape
    return attn.proj(attn.norm(o.transpose(1, 2).reshape(b, m, attn.attn_dim)))


def _mlp_residual(blk: Block, x: torch.Tensor) -> torch.Tensor:
    return x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))


def block_forward_shared_prefix(blk: Block, prefix: torch.Tensor, rest: torch.Tensor, repeat: int) -> torch.Tensor:
    """`blk(cat([prefix.repeat(repeat, 1, 1), rest], 1))`, normalising and projecting `prefix` once.

    The prefix rows are identical in every repeat, so their LayerNorm and q/k/v projection are
    computed once and then repeated; only attention onwards sees the full (repeat * R) rows.
    """
    attn = blk.attn
    assert isinstance(attn, Attention)  # the fast paths are taken for _plain_block blocks only
    b, n_pre = len(rest), prefix.shape[1]
    n = n_pre + rest.shape[1]
    qkv = torch.cat([attn.qkv(blk.norm1(prefix)).repeat(repeat, 1, 1), attn.qkv(blk.norm1(rest))], dim=1)
    q, k, v = qkv.reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    x = torch.cat([prefix.repeat(repeat, 1, 1), rest], dim=1)
    x = x + blk.drop_path1(blk.ls1(_attend(attn, q, k, v)))
    return _mlp_residual(blk, x)


def block_forward_tail(blk: Block, x: torch.Tensor, start: int) -> torch.Tensor:
    """`blk(x)[:, start:]`, computing queries, attention rows and the MLP only for those tokens.

    Every token still provides keys and values; the tokens before `start` get no output, which
    saves their query projection, their attention rows, the output projection and the MLP.
    """
    attn = blk.attn
    assert isinstance(attn, Attention)  # the fast paths are taken for _plain_block blocks only
    b, n, _ = x.shape
    d = attn.attn_dim
    h = blk.norm1(x)
    w, bias = attn.qkv.weight, attn.qkv.bias
    q = F.linear(h[:, start:], w[:d], None if bias is None else bias[:d])
    kv = F.linear(h, w[d:], None if bias is None else bias[d:])
    q = q.reshape(b, n - start, attn.num_heads, attn.head_dim).transpose(1, 2)
    k, v = kv.reshape(b, n, 2, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    y = x[:, start:] + blk.drop_path1(blk.ls1(_attend(attn, q, k, v)))
    return _mlp_residual(blk, y)


class VisionTransformer(nn.Module):
    """I-JEPA encoder: patch tokens only (no class token), fixed 2-D sin-cos positions, final LayerNorm."""

    def __init__(
        self,
        img_size: int | Sequence[int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_layer: Callable[..., nn.Module] = LayerNorm6,
        init_std: float = 0.02,
        init: str = "reference",
        pos_embed_resize: str = "sincos",
    ) -> None:
        super().__init__()
        self.img_size = _to_2tuple(img_size)
        self.patch_size = patch_size
        for s in self.img_size:
            if s % patch_size:
                raise ValueError(
                    f"image size {self.img_size} is not divisible by patch size {patch_size}; "
                    f"use an image side that is a multiple of {patch_size}"
                )
        self.grid_size = (self.img_size[0] // patch_size, self.img_size[1] // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.embed_dim = self.num_features = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.pos_embed_resize = pos_embed_resize

        self.patch_embed = PatchEmbed(
            img_size=self.img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, strict_img_size=False
        )
        # A frozen Parameter (not a buffer), as in the reference: same state-dict key and the same
        # optimizer parameter order, so reference optimizer states line up.
        self.pos_embed = nn.Parameter(sincos_2d(embed_dim, self.grid_size)[None], requires_grad=False)
        self.blocks = _make_blocks(
            embed_dim, depth, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, drop_path_rate, norm_layer
        )
        self.norm = norm_layer(embed_dim)
        self.init_std = init_std
        _init_weights(self, self.blocks, init_std, init)
        # Gradient-free CPU forwards split the batch so one chunk's MLP activation is about this
        # many bytes (cache-sized); None or 0 turns the chunking off.
        self.cpu_chunk_bytes: int | None = 10 << 20

    def _pos_embed_for(self, grid: tuple[int, int]) -> torch.Tensor:
        if grid == self.grid_size:
            return self.pos_embed
        return resize_pos_embed(self.pos_embed, grid, self.pos_embed_resize)

    def prepare_tokens(self, x: torch.Tensor, masks: torch.Tensor | list[torch.Tensor] | None = None) -> torch.Tensor:
        """Patchify, add positions, keep the masked-in tokens: (B,C,H,W) -> (len(masks)*B, K, D)."""
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"input {h}x{w} is not divisible by patch size {self.patch_size}; "
                f"resize or crop to a multiple of {self.patch_size}"
            )
        # The conv's (B, D, H, W) output flattens to a transposed (B, N, D) view; made contiguous
        # here, or every residual add and LayerNorm downstream would run on (and copy) that layout.
        x = self.patch_embed(x).contiguous()  # (B, N, D)
        x = x + self._pos_embed_for((h // self.patch_size, w // self.patch_size))
        if masks is not None:
            x = apply_masks(x, masks)
        return x

    def inference_chunk(self, x: torch.Tensor) -> int:
        """Images per chunk for gradient-free CPU forwards (see `cpu_chunk_bytes`)."""
        n = (x.shape[-2] // self.patch_size) * (x.shape[-1] // self.patch_size)
        assert self.cpu_chunk_bytes is not None, "CPU chunking is off (cpu_chunk_bytes is None)"
        hidden = mlp_width(self.blocks[0]) if len(self.blocks) else self.embed_dim
        return max(1, int(self.cpu_chunk_bytes) // (n * hidden * x.element_size()))

    def forward(self, x: torch.Tensor, masks: torch.Tensor | list[torch.Tensor] | None = None) -> torch.Tensor:
        """Encode images, optionally only the patches listed in `masks`; returns normed tokens.

        Without gradients on CPU, large batches run in chunks of `inference_chunk(x)` images: every
        image is encoded independently, so the outputs are the same, and the chunks' activations
        stay in cache instead of streaming through fresh memory (about 20% faster at batch 64).
        """
        if (
            masks is None
            and self.cpu_chunk_bytes
            and x.device.type == "cpu"
            and not torch.is_grad_enabled()
            and x.dim() == 4
        ):
            chunk = self.inference_chunk(x)
            if len(x) >= 2 * chunk:
                return torch.cat([self._encode(part, None) for part in x.split(chunk)])
        return self._encode(x, masks)

    def _encode(self, x: torch.Tensor, masks: torch.Tensor | list[torch.Tensor] | None) -> torch.Tensor:
        x = self.prepare_tokens(x, masks)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def get_intermediate_layers(self, x: torch.Tensor, n: int = 1, norm: bool = True) -> list[torch.Tensor]:
        """Outputs of the last `n` blocks, each (B, N, D), passed through the final norm if `norm`."""
        x = self.prepare_tokens(x)
        outs = []
        first = len(self.blocks) - n
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i >= first:
                outs.append(self.norm(x) if norm else x)
        return outs


class VisionTransformerPredictor(nn.Module):
    """I-JEPA predictor: a narrow ViT over [context tokens ; mask tokens of one target block]."""

    def __init__(
        self,
        num_patches: int,
        embed_dim: int = 768,
        predictor_embed_dim: int = 384,
        depth: int = 6,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_layer: Callable[..., nn.Module] = LayerNorm6,
        init_std: float = 0.02,
        init: str = "reference",
        grid_size: tuple[int, int] | None = None,
        out_dim: int | None = None,
    ) -> None:
        super().__init__()
        if grid_size is None:
            g = int(round(num_patches**0.5))
            if g * g != num_patches:
                raise ValueError(f"num_patches={num_patches} is not square; pass grid_size=(h, w)")
            grid_size = (g, g)
        gh, gw = grid_size  # also accepts a list, e.g. from a stored config
        self.grid_size = (gh, gw)
        self.num_patches = num_patches
        self.embed_dim = embed_dim
        self.predictor_embed_dim = predictor_embed_dim
        self.predictor_embed = nn.Linear(embed_dim, predictor_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, predictor_embed_dim))
        self.predictor_pos_embed = nn.Parameter(
            sincos_2d(predictor_embed_dim, self.grid_size)[None], requires_grad=False
        )
        self.predictor_blocks = _make_blocks(
            predictor_embed_dim,
            depth,
            num_heads,
            mlp_ratio,
            qkv_bias,
            drop_rate,
            attn_drop_rate,
            drop_path_rate,
            norm_layer,
        )
        self.predictor_norm = norm_layer(predictor_embed_dim)
        # out_dim != embed_dim serves the pixel-target ablation (predict patch pixels).
        self.predictor_proj = nn.Linear(predictor_embed_dim, out_dim or embed_dim, bias=True)
        self.init_std = init_std
        _init_weights(self, self.predictor_blocks, init_std, init)
        nn.init.trunc_normal_(self.mask_token, std=init_std, a=-2.0, b=2.0)
        # Exact fast path (same outputs up to float rounding): the first block normalises and
        # projects the context once instead of once per target block, and the last block, the
        # final norm and the projection run only on the target tokens (the only outputs used).
        self.fast_path = True

    def forward(
        self, x: torch.Tensor, masks_x: torch.Tensor | list[torch.Tensor], masks: torch.Tensor | list[torch.Tensor]
    ) -> torch.Tensor:
        """Predict target tokens: x (nenc*B, Kc, D) -> (npred*nenc*B, Kp, D), reference row order."""
        if isinstance(masks_x, torch.Tensor):
            masks_x = [masks_x]
        if isinstance(masks, torch.Tensor):
            masks = [masks]
        batch = len(x) // len(masks_x)

        x = self.predictor_embed(x)  # (nenc*B, Kc, P)
        pos = self.predictor_pos_embed.expand(batch, -1, -1)
        x = x + apply_masks(pos, masks_x)
        n_ctx = x.shape[1]

        # One learned mask token per target position, told where it is by its position embedding.
        target_pos = apply_masks(pos, masks)  # (npred*B, Kp, P)
        target_pos = repeat_interleave_batch(target_pos, batch, repeat=len(masks_x))
        pred_tokens = self.mask_token + target_pos  # (npred*nenc*B, Kp, P)

        # Each target block is its own row: targets attend to the context, never to other blocks.
        blocks = list(self.predictor_blocks)
        if not (self.fast_path and len(blocks) >= 2 and all(_plain_block(b) for b in blocks)):
            x = torch.cat([x.repeat(len(masks), 1, 1), pred_tokens], dim=1)
            for blk in blocks:
                x = blk(x)
            x = self.predictor_norm(x)
            return self.predictor_proj(x[:, n_ctx:])
        head, tail = blocks[0], blocks[-1]
        assert isinstance(head, Block) and isinstance(tail, Block)  # _plain_block checked their types
        x = block_forward_shared_prefix(head, x, pred_tokens, len(masks))
        for blk in blocks[1:-1]:
            x = blk(x)
        x = block_forward_tail(tail, x, n_ctx)
        return self.predictor_proj(self.predictor_norm(x))
