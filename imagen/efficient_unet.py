"""Efficient U-Net for the super-resolution stages (paper appendix B.1, figure A.27-A.30).

Differences from the base U-Net, as the paper lists them:
- more residual blocks at the low resolutions, fewer at the high ones (memory and compute
  live at high resolution);
- skip connections scaled by 1/sqrt(2);
- in the down path the downsampling comes *before* the convolutions, in the up path the
  upsampling comes *after* them;
- no self-attention; text enters by cross-attention at the lowest resolution and by the
  pooled embedding.
The low-resolution image, corrupted by noise conditioning augmentation, is upsampled and
concatenated to ``x_t``; its augmentation level gets its own embedding.

The shipped 32 -> 64 stage follows the same rule in its widths: 16, 32, 64, 128 channels at
64, 32, 16, 8 px with 1, 2, 3, 4 blocks, so most parameters sit at 8-16 px and a forward costs
0.70 GFLOP per image (a 32-64-128 shape with blocks 1-2-3 costs 1.82; ``benchmarks/sr_arch.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .nn import Attention, ResBlock, TextConditioning, TimeEmbedding, group_norm
from .unet import null_text_tokens

SKIP_SCALE = 1.0 / math.sqrt(2.0)


@dataclass
class EfficientUNetConfig:
    image_size: int = 64
    lowres_size: int = 32
    in_channels: int = 3
    channels: tuple[int, ...] = (32, 64, 128)
    blocks: tuple[int, ...] = (1, 2, 3)
    text_dim: int = 384
    heads: int = 4


class DBlock(nn.Module):
    """Down block: downsample first, then residual blocks (then cross-attention if set)."""

    def __init__(self, c_in: int, c_out: int, n: int, emb_dim: int, stride: int, ctx_dim: int | None, heads: int):
        super().__init__()
        self.down = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        self.res = nn.ModuleList([ResBlock(c_out, c_out, emb_dim) for _ in range(n)])
        self.attn = Attention(c_out, ctx_dim, heads) if ctx_dim else None

    def forward(self, h, emb, ctx, mask):
        h = self.down(h)
        for r in self.res:
            h = r(h, emb)
        return self.attn(h, ctx, mask) if self.attn is not None else h


class UBlock(nn.Module):
    """Up block: skip merge (scaled 1/sqrt 2), residual blocks, then upsample last."""

    def __init__(self, c_in: int, c_out: int, n: int, emb_dim: int, upsample: bool, ctx_dim: int | None, heads: int):
        super().__init__()
        self.res = nn.ModuleList([ResBlock(c_in if i == 0 else c_out, c_out, emb_dim) for i in range(n)])
        self.attn = Attention(c_out, ctx_dim, heads) if ctx_dim else None
        self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                nn.Conv2d(c_out, c_out, 3, padding=1)) if upsample else nn.Identity()

    def forward(self, h, emb, ctx, mask):
        for r in self.res:
            h = r(h, emb)
        if self.attn is not None:
            h = self.attn(h, ctx, mask)
        return self.up(h)


class EfficientUNet(nn.Module):
    def __init__(self, cfg: EfficientUNetConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels
        emb_dim = 4 * ch[0]
        self.time = TimeEmbedding(ch[0], emb_dim)
        self.aug_time = TimeEmbedding(ch[0], emb_dim)
        self.text = TextConditioning(cfg.text_dim, ch[-1], emb_dim)
        self.null_token = nn.Parameter(torch.randn(1, 1, cfg.text_dim) * 0.02)
        self.stem = nn.Conv2d(2 * cfg.in_channels, ch[0], 3, padding=1)
        last = len(ch) - 1
        self.down = nn.ModuleList()
        c_prev = ch[0]
        for i, c in enumerate(ch):
            self.down.append(DBlock(c_prev, c, cfg.blocks[i], emb_dim, 1 if i == 0 else 2,
                                    ch[-1] if i == last else None, cfg.heads))
            c_prev = c
        self.up = nn.ModuleList()
        for i in reversed(range(len(ch))):
            c_out = ch[i - 1] if i > 0 else ch[0]
            self.up.append(UBlock(c_prev + ch[i], c_out, cfg.blocks[i], emb_dim, i > 0,
                                  ch[-1] if i == last else None, cfg.heads))
            c_prev = c_out
        self.out_norm = group_norm(c_prev)
        self.out = nn.Conv2d(c_prev, cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor,
                drop_text: torch.Tensor | None = None, lowres: torch.Tensor | None = None,
                aug_level: torch.Tensor | None = None) -> torch.Tensor:
        if lowres is None or aug_level is None:
            raise ValueError("a super-resolution stage needs the low-res image and its aug_level")
        tokens, mask = null_text_tokens(self, tokens, mask, drop_text)
        ctx, pooled = self.text(tokens, mask)
        emb = self.time(t) + self.aug_time(aug_level) + pooled
        up = F.interpolate(lowres, size=x_t.shape[-2:], mode="bilinear", align_corners=False, antialias=False)
        h = self.stem(torch.cat([x_t, up], dim=1))
        skips = []
        for block in self.down:
            h = block(h, emb, ctx, mask)
            skips.append(h)
        for block in self.up:
            h = block(torch.cat([h, skips.pop() * SKIP_SCALE], dim=1), emb, ctx, mask)
        return self.out(F.silu(self.out_norm(h)))
