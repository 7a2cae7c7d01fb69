"""Static and dynamic thresholding of the x0 prediction (paper section 2.3).

"Static thresholding: elementwise clipping the x-prediction to [-1, 1]."
"Dynamic thresholding: at each sampling step we set s to a certain percentile absolute
pixel value in x0_pred, and if s > 1, then we threshold x0_pred to the range [-s, s] and
then divide by s." The percentile p is a config value (the paper does not state it
precisely; diffusers and DeepFloyd IF use 0.995, imagen-pytorch 0.95).
"""
from __future__ import annotations

from typing import Literal

import torch

Thresholding = Literal["none", "static", "dynamic"]


def static_threshold(x0_pred: torch.Tensor) -> torch.Tensor:
    return x0_pred.clamp(-1.0, 1.0)


def dynamic_threshold(x0_pred: torch.Tensor, percentile: float = 0.995) -> torch.Tensor:
    """Per sample: s = quantile_p(|x0_pred|); s = max(s, 1); clip to [-s, s]; divide by s."""
    flat = x0_pred.reshape(x0_pred.shape[0], -1).abs()
    s = torch.quantile(flat, percentile, dim=1).clamp(min=1.0)
    s = s.view(-1, *([1] * (x0_pred.ndim - 1)))
    return x0_pred.clamp(-s, s) / s


def threshold(x0_pred: torch.Tensor, mode: Thresholding, percentile: float = 0.995) -> torch.Tensor:
    if mode == "none":
        return x0_pred
    if mode == "static":
        return static_threshold(x0_pred)
    if mode == "dynamic":
        return dynamic_threshold(x0_pred, percentile)
    raise ValueError(f"unknown thresholding mode {mode!r}: expected none, static or dynamic")
