"""Building blocks shared by the base U-Net and the Efficient U-Net."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of a continuous time t in [0, 1] (scaled by 1000 like DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels // 4) or 1, channels)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice; the conditioning embedding gives a per-channel scale and shift."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int):
        super().__init__()
        self.norm1 = group_norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = group_norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return h + self.skip(x)


def coord_grid(h: int, w: int, device=None, dtype=None) -> torch.Tensor:
    """(2, h, w): the pixel centres' x (growing to the right) and y (growing downwards) in [-1, 1]."""
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=device, dtype=dtype)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=device, dtype=dtype)
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"))


class Attention(nn.Module):
    """Multi-head attention from image positions to a context.

    With ``context=None`` it is self-attention; Imagen's base U-Net concatenates the text
    tokens to the self-attention keys/values, here the text path is a separate
    cross-attention layer (``CrossAttention``) for clarity.

    ``coord_queries`` (not in the paper) adds to each query a small MLP of the pixel's (x, y)
    (``coord_grid``), its last layer zero so that it starts as the same function: where the caption
    names a place ("to the left of"), which token a pixel reads can depend on where the pixel is,
    not only on the (near-noise, at t ~ 1) features there.
    """

    def __init__(self, channels: int, context_dim: int | None = None, heads: int = 4,
                 coord_queries: bool = False):
        super().__init__()
        self.heads = heads
        self.is_cross = context_dim is not None
        self.norm = group_norm(channels)
        self.q = nn.Linear(channels, channels, bias=False)
        self.kv = nn.Linear(context_dim or channels, 2 * channels, bias=False)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.q_pos = None
        if coord_queries:
            self.q_pos = nn.Sequential(nn.Linear(2, channels), nn.SiLU(), nn.Linear(channels, channels))
            nn.init.zeros_(self.q_pos[-1].weight)
            nn.init.zeros_(self.q_pos[-1].bias)

    def queries(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(b, hw, c): the queries of the normed positions ``tokens``, plus their place (``coord_queries``)."""
        q = self.q(tokens)
        if self.q_pos is not None:
            q = q + self.q_pos(coord_grid(h, w, tokens.device, tokens.dtype).flatten(1).T)
        return q

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (b, hw, c)
        ctx = tokens if context is None else context
        q = self.queries(tokens, h, w).view(b, -1, self.heads, c // self.heads).transpose(1, 2)
        k, v = self.kv(ctx).view(b, ctx.shape[1], 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        mask = None if context_mask is None else context_mask[:, None, None, :].bool()
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).reshape(b, h * w, c)
        return x + self.out(y).transpose(1, 2).reshape(b, c, h, w)


class TextConditioning(nn.Module):
    """Text tokens -> (layer-normed, projected tokens, pooled vector for the time embedding).

    Paper 2.1 / A: a layer norm on the text embeddings before attention and pooling improves
    results; the pooled embedding is added to the timestep embedding.
    """

    def __init__(self, text_dim: int, context_dim: int, emb_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(text_dim)
        self.proj = nn.Linear(text_dim, context_dim)
        self.pool = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, emb_dim))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = mask.to(tokens.dtype)[..., None]
        pooled = (tokens * m).sum(1) / m.sum(1).clamp(min=1.0)  # mean over real tokens
        return self.proj(self.norm(tokens)), self.pool(pooled)


class TimeEmbedding(nn.Module):
    def __init__(self, base_dim: int, emb_dim: int):
        super().__init__()
        self.base_dim = base_dim
        self.mlp = nn.Sequential(nn.Linear(base_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.base_dim))
