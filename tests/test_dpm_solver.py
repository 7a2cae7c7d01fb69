"""DPM-Solver++(2M) (``sampler.kind=dpmpp_2m``) on a toy problem whose exact data prediction and exact ODE
solution are known: x_0 ~ N(mu, diag(var)) per pixel, so E[x_0 | x_t] and the probability-flow map
x_T -> x_0 are closed-form. Checked against a hand-written Algorithm 2 (Lu et al. 2022), against the exact
ODE solution (second order, ahead of DDIM at equal steps), and against diffusers'
DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2) on the same discrete time grid.
Its stochastic form (``sampler.kind=dpmpp_2m_sde``) against diffusers' ``algorithm_type="sde-dpmsolver++"``
fed the same noise, and against the exact marginal of the toy (an SDE sampler draws x_0 ~ N(mu, var))."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler

from imagen.guidance import guide
from imagen.sampler import sample
from imagen.schedule import LOGSNR_T_MIN, alpha_sigma, lambda_, time_grid
from imagen.thresholding import threshold

SHAPE = (3, 4, 4)


class GaussianToy:
    """The exact v-prediction of x_0 ~ N(mu, diag(var)); text-dropped rows use ``mu_uncond`` instead of
    ``mu``. Records every x it is called with (the sampler's x_{t_i}, cond rows first)."""

    def __init__(self, mu: torch.Tensor, var: torch.Tensor, mu_uncond: torch.Tensor | None = None):
        self.mu, self.var = mu.double(), var.double()
        self.mu_uncond = self.mu if mu_uncond is None else mu_uncond.double()
        self.inputs: list[torch.Tensor] = []

    def x0(self, x: torch.Tensor, t: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """E[x_0 | x_t] = mu + alpha var / (alpha^2 var + sigma^2) (x_t - alpha mu)."""
        a, s = (v.double().view(-1, 1, 1, 1) for v in alpha_sigma(t.double()))
        mu = self.mu if drop is None else torch.where(drop.view(-1, 1, 1, 1), self.mu_uncond, self.mu)
        return mu + a * self.var / (a**2 * self.var + s**2) * (x.double() - a * mu)

    def __call__(self, x, t, tokens, mask, drop_text=None):
        self.inputs.append(x.clone())
        a, s = (v.double().view(-1, 1, 1, 1) for v in alpha_sigma(t.double()))
        x0 = self.x0(x, t, drop_text)
        eps = (x.double() - a * x0) / s
        return (a * eps - s * x0).to(x.dtype)  # v = alpha eps - sigma x_0

    def exact(self, x_T: torch.Tensor) -> torch.Tensor:
        """The ODE's own solution at t = 0: x_t - alpha_t mu = sqrt(alpha_t^2 var + sigma_t^2) z, z constant."""
        a, s = (float(v) for v in alpha_sigma(torch.tensor(1.0, dtype=torch.float64)))
        return self.mu + self.var.sqrt() * (x_T.double() - a * self.mu) / (a**2 * self.var + s**2).sqrt()


def _toy(seed: int = 0, spread: float = 0.8, guided: bool = False) -> GaussianToy:
    g = torch.Generator().manual_seed(seed)
    mu = (torch.rand(1, *SHAPE, generator=g) * 2 - 1) * spread
    var = torch.rand(1, *SHAPE, generator=g) * 0.3 + 0.02
    return GaussianToy(mu, var, 0.3 * mu if guided else None)


def _inputs(b: int, w: float | list[float], dtype=torch.float64, seed: int = 1):
    x_T = torch.randn(b, *SHAPE, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    wv = torch.tensor(w if isinstance(w, list) else [w] * b, dtype=torch.float32)
    return x_T, torch.zeros(b, 1, 1), torch.ones(b, 1, dtype=torch.bool), wv


def _rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).pow(2).mean().sqrt())


@pytest.mark.parametrize("w,thresholding", [(1.0, "none"), (3.0, "dynamic"), (5.0, "static")])
def test_updates_equal_algorithm_2_by_hand(w, thresholding):
    toy = _toy(guided=True, spread=1.6)  # means beyond [-1, 1]: thresholding acts
    x_T, tok, mask, wv = _inputs(3, [1.0, w, w])
    steps = 4
    out = sample(toy, x_T, tok, mask, wv, steps=steps, kind="dpmpp_2m", prediction="v", thresholding=thresholding)
    xs = [x[:3] for x in toy.inputs]  # x_{t_0} .. x_{t_3}, cond rows
    assert len(xs) == steps and torch.equal(xs[0], x_T)
    t = [1 - i / steps for i in range(steps + 1)]
    alpha, sigma = (a.tolist() for a in alpha_sigma(torch.tensor(t, dtype=torch.float64)))
    lam = [math.log(a / s) if s > 0 else math.inf for a, s in zip(alpha, sigma)]

    def x_theta(x, ti):  # guided, thresholded data prediction
        tt = torch.full((3,), ti)
        cond, uncond = toy.x0(x, tt), toy.x0(x, tt, torch.ones(3, dtype=torch.bool))
        return threshold(guide(cond, uncond, wv.double()), thresholding)

    m = [x_theta(xs[i], t[i]) for i in range(steps)]
    h = [None] + [lam[i] - lam[i - 1] for i in range(1, steps)]
    # Algorithm 2: x_1 = (sigma_1/sigma_0) x_0 - alpha_1 (e^{-h_1} - 1) x_theta(x_0, t_0)
    x1 = sigma[1] / sigma[0] * x_T - alpha[1] * (math.exp(-h[1]) - 1) * m[0]
    torch.testing.assert_close(xs[1], x1, atol=1e-6, rtol=0)
    for i in (2, 3):  # r_i = h_{i-1}/h_i, D_i = (1 + 1/(2 r_i)) M_{i-1} - 1/(2 r_i) M_{i-2}
        r = h[i - 1] / h[i]
        d = (1 + 1 / (2 * r)) * m[i - 1] - 1 / (2 * r) * m[i - 2]
        x_i = sigma[i] / sigma[i - 1] * xs[i - 1] - alpha[i] * (math.exp(-h[i]) - 1) * d
        torch.testing.assert_close(xs[i], x_i, atol=1e-6, rtol=0)
    # last step to sigma = 0, first order: x_0 = x_theta(x_{t_3}, t_3)
    torch.testing.assert_close(out, m[3], atol=1e-6, rtol=0)
    if thresholding != "none":
        assert out.abs().max() <= 1 + 1e-6


def test_two_steps_equal_ddim():
    """Both steps of a 2-step run are first order: DPM-Solver++1 is DDIM."""
    toy = _toy()
    x_T, tok, mask, w = _inputs(4, 1.0)
    a = sample(toy, x_T, tok, mask, w, steps=2, kind="dpmpp_2m", prediction="v", thresholding="none")
    b = sample(toy, x_T, tok, mask, w, steps=2, kind="ddim", prediction="v", thresholding="none")
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def _errors(kind: str, steps: tuple[int, ...]) -> dict[int, float]:
    toy = _toy()
    x_T, tok, mask, w = _inputs(64, 1.0)
    ref = toy.exact(x_T)
    return {n: _rms(sample(toy, x_T, tok, mask, w, steps=n, kind=kind, prediction="v", thresholding="none"), ref)
            for n in steps}


def test_converges_to_the_exact_ode_solution_faster_than_ddim():
    steps = (5, 10, 15, 25, 50, 100)
    ddim, dpm = _errors("ddim", steps), _errors("dpmpp_2m", steps)
    print("RMS error vs exact ODE solution:", {n: (f"{ddim[n]:.2e}", f"{dpm[n]:.2e}") for n in steps})
    assert dpm[10] < 0.6 * ddim[10] and dpm[25] < 0.25 * ddim[25]
    assert all(dpm[n] < ddim[n] for n in steps)
    assert 3.0 < dpm[50] / dpm[100] < 5.0   # second order: error / 4 per doubling
    assert 1.7 < ddim[50] / ddim[100] < 2.3  # DDIM: first order


def test_time_grids():
    """``time``: uniform in t; ``logsnr``: uniform in lambda from t = 1 to LOGSNR_T_MIN, then t = 0."""
    torch.testing.assert_close(time_grid(4, "time"), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=torch.float64))
    t = time_grid(10, "logsnr")
    assert len(t) == 11 and t[0] == 1.0 and t[-1] == 0.0 and bool((t[1:] < t[:-1]).all())
    assert abs(float(t[-2]) - LOGSNR_T_MIN) < 1e-9
    steps = lambda_(t[:-1]).diff()
    torch.testing.assert_close(steps, torch.full_like(steps, float(steps.mean())), rtol=1e-9, atol=0)
    torch.testing.assert_close(time_grid(1, "logsnr"), torch.tensor([1.0, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown time grid 'karras': expected one of time, logsnr"):
        time_grid(4, "karras")


def test_logsnr_grid_is_closer_to_the_ode_solution_at_few_steps():
    """At 5 and 10 steps the logSNR grid is well ahead of the uniform-t grid; with many steps its error levels
    off at the bias of ending on x0_pred at t = LOGSNR_T_MIN instead of integrating to t = 0."""
    toy = _toy()
    x_T, tok, mask, w = _inputs(64, 1.0)
    ref = toy.exact(x_T)
    err = {(g, n): _rms(sample(toy, x_T, tok, mask, w, steps=n, kind="dpmpp_2m", grid=g, prediction="v",
                               thresholding="none"), ref) for g in ("time", "logsnr") for n in (5, 10, 100)}
    print("RMS error vs exact ODE solution:", {k: f"{v:.2e}" for k, v in err.items()})
    assert err["logsnr", 5] < 0.8 * err["time", 5] and err["logsnr", 10] < 0.3 * err["time", 10]
    assert err["time", 100] < err["logsnr", 100] < 0.02


def _diffusers_dpmpp_2m(toy: GaussianToy, x_T: torch.Tensor, w: torch.Tensor, steps: int, thresholding: bool,
                        n_train: int = 1000, algorithm: str = "dpmpp", noise=None) -> torch.Tensor:
    """diffusers' DPM-Solver++(2M) on the discrete times n / n_train, with alphas_cumprod of our schedule there;
    the custom timesteps [n_train, ..., n_train / steps] are our grid t_i = 1 - i / steps, then sigma = 0.
    ``noise`` (a callable giving each step's noise): its SDE form, ``sde-dpmsolver++``, fed that noise."""
    abar = alpha_sigma(torch.arange(n_train + 1, dtype=torch.float64) / n_train)[0] ** 2
    betas = torch.cat([1 - abar[:1], 1 - abar[1:] / abar[:-1]]).numpy()
    sched = DPMSolverMultistepScheduler(num_train_timesteps=n_train + 1, trained_betas=betas,
                                        prediction_type="v_prediction", solver_order=2, solver_type="midpoint",
                                        algorithm_type="dpmsolver++" if noise is None else "sde-dpmsolver++",
                                        thresholding=thresholding, dynamic_thresholding_ratio=0.995, sample_max_value=1e6,
                                        final_sigmas_type="zero", lower_order_final=True)
    sched.alphas_cumprod = abar.numpy()  # exact (not a float32 cumprod of the betas); set_timesteps reads it
    assert n_train % steps == 0
    with np.errstate(divide="ignore"):  # log(sigma) at n = 0, where sigma = 0; never used
        sched.set_timesteps(timesteps=[n_train - i * n_train // steps for i in range(steps)])
    b = x_T.shape[0]
    tok, mask = torch.zeros(b, 1, 1), torch.ones(b, 1, dtype=torch.bool)
    x = x_T.clone()
    for n in sched.timesteps:
        t = torch.full((b,), float(n) / n_train)
        cond = toy(x, t, tok, mask, drop_text=torch.zeros(b, dtype=torch.bool))
        uncond = toy(x, t, tok, mask, drop_text=torch.ones(b, dtype=torch.bool))
        z = None if noise is None else noise()
        x = sched.step(guide(cond, uncond, w), n, x, variance_noise=z).prev_sample
    return x


@pytest.mark.parametrize("steps", [5, 10, 25])
@pytest.mark.parametrize("w,thresholding", [(1.0, "none"), (3.0, "none"), (5.0, "dynamic")])
def test_matches_diffusers_dpm_solver_multistep(steps, w, thresholding):
    toy = _toy(guided=True, spread=1.5)
    x_T, tok, mask, wv = _inputs(6, [1.0] + [w] * 5, dtype=torch.float32)
    ours = sample(toy, x_T, tok, mask, wv, steps=steps, kind="dpmpp_2m", prediction="v", thresholding=thresholding)
    ref = _diffusers_dpmpp_2m(toy, x_T, wv, steps, thresholding == "dynamic")
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    assert ours.abs().max() > 1.5 or thresholding == "dynamic"  # the toy's x_0 leaves [-1, 1] unthresholded


def _row_noise(b: int, seed: int = 7):
    """Per-row generators for our sampler, and the same draws in order for diffusers' ``variance_noise``."""
    from imagen.noise import per_row_randn

    gens = [torch.Generator().manual_seed(seed + r) for r in range(b)]
    twins = [torch.Generator().manual_seed(seed + r) for r in range(b)]
    return gens, lambda: per_row_randn(twins, SHAPE, "cpu")


@pytest.mark.parametrize("steps", [5, 10])
@pytest.mark.parametrize("w,thresholding", [(1.0, "none"), (3.0, "none"), (5.0, "dynamic")])
def test_sde_matches_diffusers_sde_dpm_solver_multistep(steps, w, thresholding):
    toy = _toy(guided=True, spread=1.5)
    x_T, tok, mask, wv = _inputs(6, [1.0] + [w] * 5, dtype=torch.float32)
    gens, noise = _row_noise(6)
    ours = sample(toy, x_T, tok, mask, wv, steps=steps, kind="dpmpp_2m_sde", prediction="v",
                  thresholding=thresholding, generators=gens)
    ref = _diffusers_dpmpp_2m(toy, x_T, wv, steps, thresholding == "dynamic", noise=noise)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    ode = sample(toy, x_T, tok, mask, wv, steps=steps, kind="dpmpp_2m", prediction="v", thresholding=thresholding)
    assert _rms(ours, ode) > 0.05  # the noise changes the sample


def test_sde_draws_the_toy_marginal_sooner_than_ddpm_and_needs_generators():
    """Unguided on the Gaussian toy, x_0 ~ N(mu, var): per pixel, the mean and variance over 4000 draws at 50
    steps. The second-order SDE solver is there (variance ratios 0.99-1.07 measured); ancestral DDPM, its first
    order, still lacks up to 30% of the variance (0.71-0.91)."""
    toy = _toy()
    b = 4000
    x_T, tok, mask, w = _inputs(b, 1.0)
    var = {}
    for kind in ("dpmpp_2m_sde", "ddpm"):
        x0 = sample(toy, x_T, tok, mask, w, steps=50, kind=kind, prediction="v", thresholding="none",
                    generators=[torch.Generator().manual_seed(r) for r in range(b)])
        torch.testing.assert_close(x0.mean(0), toy.mu[0], atol=4 * float(toy.var.max().sqrt()) / b**0.5, rtol=0)
        var[kind] = x0.var(0) / toy.var[0]
    assert (var["dpmpp_2m_sde"] - 1).abs().max() < 0.12
    assert (var["dpmpp_2m_sde"] - 1).abs().max() < 0.5 * (var["ddpm"] - 1).abs().max()
    with pytest.raises(ValueError, match="dpmpp_2m_sde sampling needs one generator per row"):
        sample(toy, x_T[:2], tok[:2], mask[:2], w[:2], steps=2, kind="dpmpp_2m_sde")


def test_w1_rows_skip_the_unconditional_pass():
    toy = _toy(guided=True)
    x_T, tok, mask, w = _inputs(4, [1.0, 1.0, 4.0, 1.0])
    sample(toy, x_T, tok, mask, w, steps=3, kind="dpmpp_2m", prediction="v", thresholding="dynamic")
    assert [x.shape[0] for x in toy.inputs] == [5, 5, 5]  # 4 cond rows + 1 uncond row per forward


def test_unknown_kind_and_bad_steps_are_refused():
    toy = _toy()
    x_T, tok, mask, w = _inputs(2, 1.0)
    with pytest.raises(ValueError, match="unknown sampler kind 'euler'"):
        sample(toy, x_T, tok, mask, w, steps=2, kind="euler")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        sample(toy, x_T, tok, mask, w, steps=0, kind="dpmpp_2m")


def test_cascade_samples_dpmpp_2m_from_config(tiny_cascade):
    from bench.generators import sampler_settings
    from conftest import resolved

    cfg = resolved("config", ["sampler=dpmpp_2m", "model=imagen_tiny"])
    s = sampler_settings(cfg)
    assert s.kind == "dpmpp_2m" and cfg["sampler"]["micro_batch"] >= 1
    with pytest.raises(ValueError, match="sampler.grid: unknown time grid 'karras'"):  # before any generation
        sampler_settings({**cfg, "sampler": {**cfg["sampler"], "grid": "karras"}})
    with pytest.raises(ValueError, match="sampler.kind: unknown sampler kind 'euler': expected one of ddim, ddpm"):
        sampler_settings({**cfg, "sampler": {**cfg["sampler"], "kind": "euler"}})
    assert sampler_settings({**cfg, "sampler": {**cfg["sampler"], "kind": "dpmpp_2m_sde"}}).kind == "dpmpp_2m_sde"
    tokens, mask = tiny_cascade.text_encoder.encode(["a red circle", "a blue square"])
    w = torch.tensor([1.0, 3.0])
    a = tiny_cascade.sample(tokens, mask, w, [3, 4], steps=3, sr_steps=2, kind=s.kind, aug_level=s.aug_level)
    b = tiny_cascade.sample(tokens, mask, w, [3, 4], steps=3, sr_steps=2, kind=s.kind, aug_level=s.aug_level)
    c = tiny_cascade.sample(tokens, mask, w, [3, 4], steps=3, sr_steps=2, kind="ddim", aug_level=s.aug_level)
    assert a.shape == (2, 3, 32, 32) and torch.isfinite(a).all() and torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("kind", ["ddim", "ddpm", "dpmpp_2m", "dpmpp_2m_sde"])
def test_guidance_interval_guides_only_the_steps_inside_it(kind):
    """``interval=(t_lo, t_hi)`` (Kynkaanniemi et al. 2024): a step whose t lies outside it is the step of w = 1,
    without the unconditional pass; an interval holding every step is no interval."""
    toy = _toy(guided=True)
    x_T, tok, mask, w = _inputs(3, [1.0, 3.0, 5.0])
    gens = lambda: [torch.Generator().manual_seed(r) for r in range(3)]  # noqa: E731
    run = lambda w, interval: sample(toy, x_T, tok, mask, w, steps=6, kind=kind, prediction="v",  # noqa: E731
                                     thresholding="dynamic", generators=gens(), interval=interval)
    everywhere = run(w, None)
    torch.testing.assert_close(run(w, (0.0, 1.0)), everywhere, atol=0, rtol=0)
    torch.testing.assert_close(run(w, (0.0, 0.1)), run(torch.ones(3), None), atol=0, rtol=0)  # no t of the grid in it
    toy.inputs.clear()
    middle = run(w, (0.3, 0.7))          # the 6-step grid's t: 1, 5/6, 2/3, 1/2, 1/3, 1/6
    assert [x.shape[0] for x in toy.inputs] == [3, 3, 5, 5, 5, 3]     # 3 cond rows, + 2 uncond where guided
    torch.testing.assert_close(middle[0], everywhere[0], atol=0, rtol=0)   # the w = 1 row is unchanged
    assert not torch.allclose(middle[1:], everywhere[1:])


def test_guidance_interval_from_config():
    from bench.generators import build_generator, sampler_settings
    from conftest import resolved

    cfg = resolved("config", ["model=imagen_tiny"])
    assert sampler_settings(cfg).interval is None                      # the default: every step guided
    assert sampler_settings(resolved("config", ["model=imagen_tiny", "guidance.interval=[0.3,0.8]"])).interval == (0.3, 0.8)
    for bad, message in (([0.8, 0.3], "expected 0 <= t_lo < t_hi <= 1, got \\[0.8, 0.3\\]"),
                         ([-0.1, 0.5], "expected 0 <= t_lo < t_hi <= 1"), ([0.3], "expected null or \\[t_lo, t_hi\\]"),
                         ("middle", "expected null or")):
        with pytest.raises(ValueError, match=f"guidance.interval: {message}"):
            sampler_settings({**cfg, "guidance": {**cfg["guidance"], "interval": bad}})
    python = {**cfg, "model": {"kind": "python", "target": "math:sqrt"}, "guidance": {**cfg["guidance"], "interval": [0.3, 0.8]}}
    with pytest.raises(ValueError, match="guidance.interval applies to the built-in cascade's sampler"):
        build_generator(python)
