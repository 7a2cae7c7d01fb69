"""The base text-to-image U-Net (paper section 2.4 and appendix F).

Text enters in two ways, as in the paper: cross-attention from image positions to the
(layer-normed) text tokens at ``attn_resolutions`` (the shipped 32 px base: all of 32, 16 and 8 px),
and a pooled text vector added to the timestep embedding. Classifier-free guidance needs an
unconditional model too: rows whose ``drop_text`` flag is set see a learned null token instead of
the caption.

``coords`` (not in the paper) adds two input channels holding each pixel's x and y in [-1, 1]
(CoordConv, Liu et al. 2018): a convolutional U-Net knows where it is only from its zero padding, yet
"a red circle to the left of a blue square" asks the near-noise input at t ~ 1 for a place-dependent
output. With their stem weights at zero a base with coords computes what the same base without does.
``coord_queries`` (not in the paper either) gives the cross-attention queries the same (x, y)
directly (``Attention``), zero at the start as well.
``late_self_attention`` (resolutions) ends each block there with a self-attention layer after the
cross-attention: the objects' features can read each other's after reading the caption. Being last in
its block, it can be grown onto a trained base as the identity (``bench.training.load_weights``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .nn import Attention, ResBlock, TextConditioning, TimeEmbedding, coord_grid, group_norm


@dataclass
class UNetConfig:
    image_size: int = 32
    in_channels: int = 3
    channels: tuple[int, ...] = (32, 64, 128)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16, 8)
    text_dim: int = 384
    heads: int = 4
    self_attention: bool = False
    late_self_attention: tuple[int, ...] = ()
    coords: bool = False
    coord_queries: bool = False


def null_text_tokens(model: nn.Module, tokens: torch.Tensor, mask: torch.Tensor,
                     drop_text: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace the caption of rows with ``drop_text`` by the learned null token (CFG)."""
    if drop_text is None or not bool(drop_text.any()):
        return tokens, mask
    keep = ~drop_text.bool()
    null = model.null_token.to(tokens.dtype).expand(tokens.shape[0], tokens.shape[1], -1)
    first = torch.zeros_like(mask)
    first[:, 0] = 1
    tokens = torch.where(keep[:, None, None], tokens, null)
    mask = torch.where(keep[:, None], mask, first)
    return tokens, mask


def with_coords(x: torch.Tensor) -> torch.Tensor:
    """``x`` (B, C, H, W) with two more channels: the pixel centres' x and y in [-1, 1]."""
    b, _, h, w = x.shape
    grid = coord_grid(h, w, x.device, x.dtype)           # (2, H, W): x, y
    return torch.cat([x, grid.expand(b, -1, -1, -1)], dim=1)


class BaseUNet(nn.Module):
    """Text-conditional U-Net: eps or v prediction at ``image_size`` (64 in the paper)."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels
        emb_dim = 4 * ch[0]
        self.time = TimeEmbedding(ch[0], emb_dim)
        self.text = TextConditioning(cfg.text_dim, ch[-1], emb_dim)
        self.null_token = nn.Parameter(torch.randn(1, 1, cfg.text_dim) * 0.02)
        self.stem = nn.Conv2d(cfg.in_channels + (2 if cfg.coords else 0), ch[0], 3, padding=1)

        self.down = nn.ModuleList()
        skip_ch = [ch[0]]
        c_prev, res = ch[0], cfg.image_size
        for level, c in enumerate(ch):
            for _ in range(cfg.num_res_blocks):
                self.down.append(self._block(c_prev, c, emb_dim, res))
                c_prev = c
                skip_ch.append(c)
            if level < len(ch) - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skip_ch.append(c)
                res //= 2
        self.mid = nn.ModuleList([self._block(c_prev, c_prev, emb_dim, res, force_attn=True),
                                  self._block(c_prev, c_prev, emb_dim, res)])
        self.up = nn.ModuleList()
        for level, c in reversed(list(enumerate(ch))):
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(self._block(c_prev + skip_ch.pop(), c, emb_dim, res))
                c_prev = c
            if level > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
                res *= 2
        self.out_norm = group_norm(c_prev)
        self.out = nn.Conv2d(c_prev, cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _block(self, c_in: int, c_out: int, emb_dim: int, res: int, force_attn: bool = False) -> nn.ModuleList:
        layers = nn.ModuleList([ResBlock(c_in, c_out, emb_dim)])
        if res in self.cfg.attn_resolutions or force_attn:
            if self.cfg.self_attention:
                layers.append(Attention(c_out, None, self.cfg.heads))
            layers.append(Attention(c_out, self.cfg.channels[-1], self.cfg.heads, self.cfg.coord_queries))
        if res in self.cfg.late_self_attention:
            layers.append(Attention(c_out, None, self.cfg.heads))
        return layers

    def _run(self, block: nn.ModuleList, h, emb, ctx, ctx_mask):
        h = block[0](h, emb)
        for attn in block[1:]:
            h = attn(h, ctx, ctx_mask) if attn.is_cross else attn(h)
        return h

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor,
                drop_text: torch.Tensor | None = None, drop_pooled: torch.Tensor | None = None) -> torch.Tensor:
        """``drop_pooled`` (bench.train's ``pooled_drop``, bench.binding_gap's text paths): rows whose pooled
        text vector is the empty caption's (the learned null token's), so their caption reaches the model
        through cross-attention alone."""
        return self.out(self.features(x_t, t, tokens, mask, drop_text, drop_pooled))

    def features(self, x_t: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor,
                 drop_text: torch.Tensor | None = None, drop_pooled: torch.Tensor | None = None) -> torch.Tensor:
        """The last full-resolution features, normed and activated, that the output convolution reads
        (``forward``'s arguments; bench.train's scene-kind head reads them too)."""
        tokens, mask = null_text_tokens(self, tokens, mask, drop_text)
        ctx, pooled = self.text(tokens, mask)
        if drop_pooled is not None:
            null = self.text.pool(self.null_token[:, 0].to(pooled.dtype))          # (1, emb)
            pooled = torch.where(drop_pooled.bool()[:, None], null, pooled)
        emb = self.time(t) + pooled
        h = self.stem(with_coords(x_t) if self.cfg.coords else x_t)
        skips = [h]
        for block in self.down:
            h = block(h) if isinstance(block, nn.Conv2d) else self._run(block, h, emb, ctx, mask)
            skips.append(h)
        for block in self.mid:
            h = self._run(block, h, emb, ctx, mask)
        for block in self.up:
            if isinstance(block, nn.Upsample):
                h = block(h)
            else:
                h = self._run(block, torch.cat([h, skips.pop()], dim=1), emb, ctx, mask)
        return F.silu(self.out_norm(h))
