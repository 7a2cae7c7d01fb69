"""Classifier-free guidance in the Imagen convention (paper section 2.2, Ho & Salimans 2021)."""
from __future__ import annotations

import torch


def guide(eps_cond: torch.Tensor, eps_uncond: torch.Tensor | None, w: torch.Tensor | float) -> torch.Tensor:
    """eps = eps_uncond + w * (eps_cond - eps_uncond).

    w = 1 means no guidance: the conditional prediction is returned as is (and callers
    skip the unconditional pass). ``w`` may be a per-row tensor of shape (B,).
    """
    if eps_uncond is None:
        return eps_cond
    if not torch.is_tensor(w):
        return eps_cond if w == 1 else eps_uncond + w * (eps_cond - eps_uncond)
    w = w.to(eps_cond.dtype).view(-1, *([1] * (eps_cond.ndim - 1)))
    return eps_uncond + w * (eps_cond - eps_uncond)
