"""A training-only task for the base stage: name, per pixel, which object the clean image x0 has there.

The diffusion loss asks for binding only weakly: at the noise levels where the caption decides which
colour goes with which shape or place (t >~ 0.85, ``bench.binding_gap``'s twin gain), knowing it
lowers the v-loss by about 0.004-0.02 of a loss near 0.09, on the few edge pixels where a circle and a
square differ. The same question asked as a classification is loud: from the base's last features
(``BaseUNet.features``, which the output convolution reads), a 3x3 convolution predicts each pixel's
kind, one of the 18 (colour, shape) pairs or background (``bench.shapes.render_kinds``), with a
cross-entropy. At high t a bag of words can only spread each blob's pixels over the caption's kinds
(loss ~ln 2 on a two-object scene); binding puts them on the one kind whose colour the blob shows, or
whose place the relation names. The head is not part of the stage: ``ema.safetensors`` holds the U-Net
alone and sampling is unchanged. (This project's own auxiliary task, in the spirit of deep supervision;
not in the Imagen paper.)
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.shapes import KINDS, render_kinds


class KindHead(nn.Module):
    """A base U-Net (``unet``) with a per-pixel scene-kind classifier on its last features (``head``)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet
        self.head = nn.Conv2d(unet.out.in_channels, len(KINDS) + 1, 3, padding=1)

    def forward(self, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """``BaseUNet.forward``'s arguments; returns its prediction and the kind logits (B, 19, H, W)."""
        h = self.unet.features(*args, **kwargs)
        return self.unet.out(h), self.head(h)


def kind_maps(scenes: list, size: int) -> torch.Tensor:
    """(B, size, size) int64: each scene's ``render_kinds``."""
    return torch.from_numpy(np.stack([render_kinds(s, size) for s in scenes])).long()


def kind_loss(logits: torch.Tensor, kinds: torch.Tensor, keep: torch.Tensor, objects: float = 0.0) -> torch.Tensor:
    """Mean per-pixel cross-entropy over the rows in ``keep`` (rows with their caption; 0 when none), each
    object pixel weighted 1 + ``objects``: the few pixels where binding is decided (about 15% of a
    two-object scene) against the background, which at high t is mostly a question of where blobs are."""
    if not bool(keep.any()):
        return logits.sum() * 0.0
    if objects == 0:
        return F.cross_entropy(logits[keep].float(), kinds[keep])
    ce = F.cross_entropy(logits[keep].float(), kinds[keep], reduction="none")
    return (ce * (1 + objects * (kinds[keep] > 0).float())).mean()


def head_binding(logits: torch.Tensor, kinds: torch.Tensor) -> torch.Tensor:
    """Per row: the share of object pixels the head gives to their own kind when it may only choose among
    the kinds the scene has (its logits restricted to those), so about 0.5 for a bag of words on a two-kind
    scene and 1 for a head that binds; NaN for a row with fewer than two kinds (nothing to bind)."""
    out = torch.full((len(kinds),), float("nan"))
    for i, (lg, k) in enumerate(zip(logits, kinds)):
        present, obj = k[k > 0].unique(), k > 0
        if len(present) >= 2:
            choice = present[lg[present].argmax(0)]
            out[i] = (choice[obj] == k[obj]).float().mean()
    return out
