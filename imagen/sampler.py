"""The sampler: one plain function that reads like the paper's algorithm.

DDIM (eta = 0, Song et al. 2021) or ancestral DDPM steps over an evenly spaced grid of
continuous times 1 = t_0 > t_1 > ... > t_N = 0, with classifier-free guidance
(``imagen.guidance.guide``) and static or dynamic thresholding of x0_pred
(``imagen.thresholding``) at every step. ``kind="dpmpp_2m"`` hands the same arguments to the
multistep DPM-Solver++(2M) of ``imagen.dpm_solver`` (same grid, guidance and thresholding).
"""
from __future__ import annotations

from typing import Callable, Literal, Sequence

import torch

from .dpm_solver import sample_dpmpp_2m
from .guidance import guide
from .schedule import Prediction, alpha_sigma, to_x0_eps
from .thresholding import Thresholding, threshold

SamplerKind = Literal["ddim", "ddpm", "dpmpp_2m"]


def per_row_randn(generators: Sequence[torch.Generator], shape: Sequence[int], device) -> torch.Tensor:
    """One standard-normal tensor per row, each from its own generator (per-image seeds)."""
    return torch.stack([torch.randn(tuple(shape), generator=g, device="cpu") for g in generators]).to(device)


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
    prediction: Prediction = "eps",
    thresholding: Thresholding = "dynamic",
    percentile: float = 0.995,
    generators: Sequence[torch.Generator] | None = None,
    lowres: torch.Tensor | None = None,
    aug_level: torch.Tensor | None = None,
    on_step: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Draw x_0 ~ p(x_0 | text) starting from the noise ``x_T`` (B, C, H, W).

    ``w`` holds one guidance weight per row. Rows with w != 1 get an unconditional pass,
    evaluated in the same forward as the conditional one (cond rows, then uncond rows).
    ``generators`` (one per row) feed the fresh noise of ancestral DDPM steps.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if kind == "dpmpp_2m":
        return sample_dpmpp_2m(model, x_T, tokens, mask, w, steps=steps, prediction=prediction,
                               thresholding=thresholding, percentile=percentile, lowres=lowres,
                               aug_level=aug_level, on_step=on_step)
    if kind not in ("ddim", "ddpm"):
        raise ValueError(f"unknown sampler kind {kind!r}: expected ddim, ddpm or dpmpp_2m")
    if kind == "ddpm" and generators is None:
        raise ValueError("ddpm sampling needs one generator per row")
    b = x_T.shape[0]
    guided = (w != 1).nonzero().flatten()          # rows that need eps_uncond
    drop = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(len(guided), dtype=torch.bool)]).to(x_T.device)
    t_grid = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    x_t = x_T
    for i in range(steps):
        t, s = float(t_grid[i]), float(t_grid[i + 1])
        # 1. one forward for [cond rows; uncond rows of the guided images]
        x_in = torch.cat([x_t, x_t[guided]])
        t_in = torch.full((x_in.shape[0],), t, device=x_t.device)
        extra = {}
        if lowres is not None:
            extra = {"lowres": torch.cat([lowres, lowres[guided]]), "aug_level": torch.cat([aug_level, aug_level[guided]])}
        out = model(x_in, t_in, torch.cat([tokens, tokens[guided]]), torch.cat([mask, mask[guided]]), drop_text=drop, **extra)
        # 2. classifier-free guidance: out = out_uncond + w (out_cond - out_uncond) (linear, so
        #    the same on eps or v); rows with w == 1 keep the conditional output
        out_cond = out[:b]
        out_uncond = out_cond.clone()
        out_uncond[guided] = out[b:]
        out = guide(out_cond, out_uncond, w)
        # 3. x0_pred from the guided output, thresholded in pixel space
        x0_pred, _ = to_x0_eps(out, x_t, torch.full((b,), t, device=x_t.device), prediction)
        x0_pred = threshold(x0_pred, thresholding, percentile)
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
