"""Continuous-time Gaussian diffusion with the cosine schedule (Nichol & Dhariwal 2021).

x_t = alpha_t * x_0 + sigma_t * eps, alpha_t^2 + sigma_t^2 = 1, t in [0, 1].
Imagen trains in continuous time with a cosine schedule (paper appendix A, B).
"""
from __future__ import annotations

import math
from typing import Literal, get_args

import torch

Prediction = Literal["eps", "v"]
Grid = Literal["time", "logsnr"]
_S = 0.008
_T_MAX = 0.9946  # alpha_bar(t) ~ 1.6e-4 here; avoids alpha = 0 at t = 1
LOGSNR_T_MIN = 0.025  # the last model evaluation of a logSNR grid (sigma = 0.05); 0.01-0.05 sampled alike


def alpha_sigma(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha_t, sigma_t of the cosine schedule: alpha_bar(t) = cos^2((t + s) / (1 + s) * pi / 2)."""
    t = t.clamp(0.0, 1.0) * _T_MAX
    alpha = torch.cos((t + _S) / (1 + _S) * math.pi / 2) / math.cos(_S / (1 + _S) * math.pi / 2)
    alpha = alpha.clamp(0.0, 1.0)
    return alpha, (1 - alpha**2).clamp(min=0.0).sqrt()


def lambda_(t: torch.Tensor) -> torch.Tensor:
    """The half log-SNR lambda_t = log(alpha_t / sigma_t) (Lu et al. 2022); +inf at t = 0."""
    alpha, sigma = alpha_sigma(t)
    return torch.log(alpha) - torch.log(sigma)


def t_of_lambda(lam: torch.Tensor) -> torch.Tensor:
    """The inverse of ``lambda_`` on t in [0, 1]: alpha_t^2 = sigmoid(2 lambda), then the cosine schedule solved
    for t; a lambda below lambda_(1) gives t = 1 (``alpha_sigma`` clamps t there too)."""
    alpha = torch.sigmoid(2 * lam).sqrt() * math.cos(_S / (1 + _S) * math.pi / 2)
    return ((torch.acos(alpha) * (1 + _S) * 2 / math.pi - _S) / _T_MAX).clamp(0.0, 1.0)


def check_grid(grid: str) -> Grid:
    """``grid`` if it names a time grid (``Grid``), else ValueError naming the choices."""
    if grid not in get_args(Grid):
        raise ValueError(f"unknown time grid {grid!r}: expected one of {', '.join(get_args(Grid))}")
    return grid


def time_grid(steps: int, grid: Grid = "time") -> torch.Tensor:
    """Sampling times 1 = t_0 > t_1 > ... > t_steps = 0 (float64; the model is evaluated at t_0 .. t_{steps-1}).

    ``time``: uniform in t. ``logsnr``: uniform in lambda_t from t = 1 to ``LOGSNR_T_MIN``, then the last
    step to t = 0 (the DPM-Solver authors' "logSNR" steps, Lu et al. 2022, recommended for low resolution;
    which grid wins depends on the guidance weight: ``imagen.dpm_solver``).
    """
    if check_grid(grid) == "time":
        return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    ends = lambda_(torch.tensor([1.0, LOGSNR_T_MIN], dtype=torch.float64))
    t = t_of_lambda(torch.linspace(float(ends[0]), float(ends[1]), steps, dtype=torch.float64))
    t[0] = 1.0  # exact, not 1 - rounding
    return torch.cat([t, torch.zeros(1, dtype=torch.float64)])


def _bc(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return a.view(-1, *([1] * (x.ndim - 1)))


def q_sample(x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Forward process q(x_t | x_0)."""
    alpha, sigma = alpha_sigma(t)
    return _bc(alpha, x0) * x0 + _bc(sigma, x0) * eps


def training_target(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, prediction: Prediction) -> torch.Tensor:
    """eps, or v = alpha_t * eps - sigma_t * x_0 (Salimans & Ho 2022)."""
    if prediction == "eps":
        return eps
    alpha, sigma = alpha_sigma(t)
    return _bc(alpha, x0) * eps - _bc(sigma, x0) * x0


def to_x0_eps(out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, prediction: Prediction) -> tuple[torch.Tensor, torch.Tensor]:
    """Model output -> (x0_pred, eps_pred)."""
    alpha, sigma = (_bc(a, x_t) for a in alpha_sigma(t))
    if prediction == "eps":
        return (x_t - sigma * out) / alpha.clamp(min=1e-4), out
    x0 = alpha * x_t - sigma * out
    return x0, sigma * x_t + alpha * out
