"""Per-image noise: every row draws from its own generator, so an image never depends on its batch."""
from __future__ import annotations

from typing import Sequence

import torch


def per_row_randn(generators: Sequence[torch.Generator], shape: Sequence[int], device) -> torch.Tensor:
    """One standard-normal tensor per row, each from its own generator (per-image seeds)."""
    return torch.stack([torch.randn(tuple(shape), generator=g, device="cpu") for g in generators]).to(device)
