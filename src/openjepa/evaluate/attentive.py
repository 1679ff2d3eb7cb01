"""Attentive probe: learnable queries cross-attend over frozen patch tokens, then a linear classifier.

This is the pooling head of V-JEPA's frozen evaluation. Unlike average pooling it can weight
tokens by content, so it can read out information that is carried by a few tokens only.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._common import as_tensor, encode_labels
from .metrics import headline_accuracy
from .results import ClassifierResult


def _default_heads(embed_dim: int) -> int:
    # Head width 64 as in the ViT encoders (S/6, B/12, L/16, H/20 heads); tiny dims get one head.
    return embed_dim // 64 if embed_dim % 64 == 0 and embed_dim >= 64 else 1


class AttentiveProbe(nn.Module):
    """Query tokens -> cross-attention over LayerNorm(tokens) -> MLP residual -> mean over queries -> linear."""

    def __init__(
        self,
        embed_dim: int,
        num_classes: int,
        num_heads: int | None = None,
        num_queries: int = 1,
        mlp_ratio: float = 4.0,
    ) -> None:
        """Build the head; num_heads=None uses head width 64 (one head when D < 64 or not divisible)."""
        super().__init__()
        num_heads = _default_heads(embed_dim) if num_heads is None else int(num_heads)
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.query = nn.Parameter(torch.zeros(1, num_queries, embed_dim))
        self.norm1 = nn.LayerNorm(embed_dim, eps=1e-6)
        self.q = nn.Linear(embed_dim, embed_dim)
        self.kv = nn.Linear(embed_dim, 2 * embed_dim)
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim, eps=1e-6)
        hidden = int(embed_dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, hidden), nn.GELU(), nn.Linear(hidden, embed_dim))
        self.head = nn.Linear(embed_dim, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Truncated-normal(0.02) weights and zero biases, as the ViT encoders initialise."""
        nn.init.trunc_normal_(self.query, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, D) tokens -> (B, Q, D) pooled query tokens."""
        B, T, D = tokens.shape
        h, hd = self.num_heads, D // self.num_heads
        x = self.norm1(tokens)
        k, v = self.kv(x).view(B, T, 2, h, hd).permute(2, 0, 3, 1, 4)  # each (B, h, T, hd)
        q = self.q(self.query).expand(B, -1, -1)
        Q = q.shape[1]
        q = q.view(B, Q, h, hd).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, Q, D)
        # The query itself is not normalised (V-JEPA's CrossAttentionBlock): only the memory is.
        z = self.query + self.proj(y)
        return z + self.mlp(self.norm2(z))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, D) tokens -> (B, num_classes) logits."""
        # Averaging over queries keeps the classifier's size independent of num_queries.
        return self.head(self.pool(tokens).mean(dim=1))


@torch.no_grad()
def _predict(
    model: nn.Module, tokens: torch.Tensor, batch_size: int, device: torch.device, use_amp: bool
) -> torch.Tensor:
    model.eval()
    outs = []
    for s in range(0, tokens.shape[0], batch_size):
        xb = tokens[s : s + batch_size].to(device, torch.float32, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            outs.append(model(xb).float().cpu())
    return torch.cat(outs) if outs else torch.zeros(0, 0)


def _build(
    embed_dim: int,
    num_classes: int,
    num_heads: int | None,
    num_queries: int,
    lr: float,
    wd: float,
    seed: int,
    device: torch.device,
) -> tuple[AttentiveProbe, torch.optim.Optimizer]:
    """A seeded AttentiveProbe on `device` and its AdamW (no decay on biases, norms and the query)."""
    with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the global RNG
        torch.manual_seed(int(seed))
        model = AttentiveProbe(embed_dim, num_classes, num_heads=num_heads, num_queries=num_queries).to(device)
    # No weight decay on biases, norms and the query token, as usual for transformer heads.
    decay = [p for name, p in model.named_parameters() if p.ndim >= 2 and name != "query"]
    no_decay = [p for name, p in model.named_parameters() if p.ndim < 2 or name == "query"]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    return model, opt


def _warmup_cosine(t: int, lr: float, warmup: int, total: int) -> float:
    """Linear warmup over `warmup` steps, then cosine decay to 0 at step `total`."""
    if t < warmup:
        return lr * (t + 1) / warmup
    return lr * 0.5 * (1.0 + math.cos(math.pi * (t - warmup) / max(total - warmup, 1)))


def _train(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    warmup_epochs: float,
    seed: int,
    device: torch.device,
    use_amp: bool,
) -> None:
    """Minibatch cross-entropy training; the ragged last batch is dropped (reshuffled every epoch)."""
    n = x.shape[0]
    gen = torch.Generator().manual_seed(int(seed))
    steps_per_epoch = max(n // batch_size, 1)
    total = epochs * steps_per_epoch
    warmup = int(round(warmup_epochs * steps_per_epoch))
    t = 0
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        for s in range(steps_per_epoch):
            idx = perm[s * batch_size : (s + 1) * batch_size]
            xb = x[idx].to(device, torch.float32, non_blocking=True)  # (B, T, D), widened on the device
            yb = y[idx].to(device)
            for g in opt.param_groups:
                g["lr"] = _warmup_cosine(t, lr, warmup, total)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = F.cross_entropy(model(xb).float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            t += 1


def attentive_probe(
    train_tokens: Any,
    train_y: Any,
    test_tokens: Any,
    test_y: Any,
    *,
    epochs: int = 20,
    lr: float = 1e-3,
    wd: float = 0.05,
    batch_size: int = 256,
    warmup_epochs: float = 1.0,
    num_heads: int | None = None,
    num_queries: int = 1,
    seed: int = 0,
    device: str | torch.device = "cpu",
    amp_bf16: bool | None = None,
) -> ClassifierResult:
    """Train an AttentiveProbe on frozen (N, T, D) tokens with AdamW + warmup-cosine; top-1 in 0..1.

    Tokens may stay float16 on the CPU: each minibatch is moved to `device` and widened there.
    No validation sweep (each run trains a whole network); pick lr / wd on a held-out split
    yourself if needed.
    """
    dev = torch.device(device)
    use_amp = (dev.type == "cuda") if amp_bf16 is None else bool(amp_bf16)
    x_tr, x_te = as_tensor(train_tokens), as_tensor(test_tokens)
    if x_tr.ndim != 3 or x_te.ndim != 3:
        raise ValueError("attentive_probe expects (N, T, D) patch tokens (pooling='patch')")
    y_tr, y_te, classes = encode_labels(train_y, test_y)
    C, n = len(classes), x_tr.shape[0]
    model, opt = _build(x_tr.shape[-1], C, num_heads, num_queries, lr, wd, seed, dev)
    bs = min(int(batch_size), n)
    _train(
        model,
        opt,
        x_tr,
        y_tr,
        epochs=epochs,
        lr=lr,
        batch_size=bs,
        warmup_epochs=warmup_epochs,
        seed=seed,
        device=dev,
        use_amp=use_amp,
    )
    top1, top5 = headline_accuracy(_predict(model, x_te, bs, dev, use_amp), y_te, C)
    return ClassifierResult(top1=top1, top5=top5, n_train=int(n), n_test=int(x_te.shape[0]))
