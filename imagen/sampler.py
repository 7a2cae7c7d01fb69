"""The sampler: one plain function that reads like the paper's algorithm.

DDIM (eta = 0, Song et al. 2021) or ancestral DDPM steps over a grid of continuous times
1 = t_0 > t_1 > ... > t_N = 0 (``grid``: evenly spaced in t, or in log-SNR: ``imagen.schedule.time_grid``),
with classifier-free guidance (``imagen.guidance.guide``; at every step, or only at the noise levels of an
``interval``, Kynkaanniemi et al. 2024) and static or dynamic thresholding of x0_pred
(``imagen.thresholding``) at every step. ``kind="dpmpp_2m"`` hands the same arguments to the
multistep DPM-Solver++(2M) of ``imagen.dpm_solver`` (same grids, guidance and thresholding), and
``kind="dpmpp_2m_sde"`` to its stochastic form, SDE-DPM-Solver++(2M).
"""
from __future__ import annotations

from typing import Callable, Literal, Sequence, get_args

import torch

from .dpm_solver import Interval, data_prediction, sample_dpmpp_2m, step_weights
from .noise import per_row_randn
from .schedule import Grid, Prediction, alpha_sigma, time_grid
from .thresholding import Thresholding

SamplerKind = Literal["ddim", "ddpm", "dpmpp_2m", "dpmpp_2m_sde"]


def check_kind(kind: str) -> SamplerKind:
    """``kind`` if it names a sampler (``SamplerKind``), else ValueError naming the choices."""
    if kind not in get_args(SamplerKind):
        raise ValueError(f"unknown sampler kind {kind!r}: expected one of {', '.join(get_args(SamplerKind))}")
    return kind


@torch.inference_mode()
def sample(
    model: Callable[..., torch.Tensor],
    x_T: torch.Tensor,
    tokens: torch.Tensor,
    mask: torch.Tensor,
    w: torch.Tensor,
    *,
    steps: int = 50,
    kind: SamplerKind = "ddim",
    grid: Grid = "time",
    prediction: Prediction = "eps",
    thresholding: Thresholding = "dynamic",
    percentile: float = 0.995,
    generators: Sequence[torch.Generator] | None = None,
    lowres: torch.Tensor | None = None,
    aug_level: torch.Tensor | None = None,
    on_step: Callable[[int], None] | None = None,
    interval: Interval | None = None,
) -> torch.Tensor:
    """Draw x_0 ~ p(x_0 | text) starting from the noise ``x_T`` (B, C, H, W).

    ``w`` holds one guidance weight per row. Rows with w != 1 get an unconditional pass,
    evaluated in the same forward as the conditional one (cond rows, then uncond rows).
    ``generators`` (one per row) feed the fresh noise of ancestral DDPM and SDE-DPM-Solver++(2M) steps.
    ``grid``: the time grid, ``time`` or ``logsnr`` (``imagen.schedule.time_grid``). ``interval`` = (t_lo, t_hi):
    guidance only at steps whose t lies in it (``imagen.dpm_solver.step_weights``); None: every step.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    check_kind(kind)
    if kind in ("dpmpp_2m", "dpmpp_2m_sde"):
        return sample_dpmpp_2m(model, x_T, tokens, mask, w, steps=steps, grid=grid, prediction=prediction,
                               thresholding=thresholding, percentile=percentile, generators=generators,
                               lowres=lowres, aug_level=aug_level, on_step=on_step, sde=kind == "dpmpp_2m_sde",
                               interval=interval)
    if kind == "ddpm" and generators is None:
        raise ValueError("ddpm sampling needs one generator per row")
    t_grid = time_grid(steps, grid)
    x_t = x_T
    for i in range(steps):
        t, s = float(t_grid[i]), float(t_grid[i + 1])
        # 1-3. one forward for [cond rows; uncond rows of the guided images], classifier-free guidance
        #      out = out_uncond + w (out_cond - out_uncond) (where t is in the interval), x0_pred thresholded
        x0_pred = data_prediction(model, x_t, t, tokens, mask, step_weights(w, t, interval), prediction,
                                  thresholding, percentile, lowres, aug_level)
        if s <= 0.0:
            x_t = x0_pred
        else:
            alpha_t, sigma_t = alpha_sigma(torch.tensor(t))
            alpha_s, sigma_s = alpha_sigma(torch.tensor(s))
            # eps consistent with the thresholded x0_pred
            eps = (x_t - alpha_t * x0_pred) / sigma_t
            if kind == "ddim":
                # 4a. DDIM: x_s = alpha_s x0_pred + sigma_s eps
                x_t = alpha_s * x0_pred + sigma_s * eps
            else:
                # 4b. ancestral step from the posterior q(x_s | x_t, x0_pred)
                alpha_ts = alpha_t / alpha_s
                var_ts = sigma_t**2 - alpha_ts**2 * sigma_s**2
                mean = (alpha_ts * sigma_s**2 / sigma_t**2) * x_t + (alpha_s * var_ts / sigma_t**2) * x0_pred
                std = (var_ts * sigma_s**2 / sigma_t**2).sqrt()
                x_t = mean + std * per_row_randn(generators, x_t.shape[1:], x_t.device)
        if on_step is not None:
            on_step(i)
    return x_t
