"""What every number in metrics.csv is, in words, for ``metrics.json``: each metric's definition, estimator
and interval method, and the conventions where tools differ (resizes, clamps, estimators).

``cfg`` is a ``bench.metrics.score_run.MetricsConfig`` (read by attribute; not imported: it imports us).
"""
from __future__ import annotations

from typing import Any


def fd_interval(cfg: Any) -> str:
    level = f"{cfg.ci_level:.0%}"
    if cfg.fd_interval == "bootstrap":
        return (f"{level} percentile bootstrap over the row's images, {cfg.fd_bootstrap} resamples, reference fixed "
                "(metrics.fd_interval=bootstrap: at small N it lies above FD and does not cover the expected FD)")
    return (f"{level} delete-a-group jackknife over the row's images (Efron & Stein 1981): G = min("
            f"{cfg.fd_jackknife_groups}, N) seeded groups (seed {cfg.seed}), se^2 = (G-1)/G sum (FD_(g) - mean)^2, "
            "interval FD -+ t_(G-1) se, reference fixed; for the expected FD at this N (FD is biased upward at "
            "small N: compare rows of different N with fd_excess or fd_inf); always contains fd")


def definitions(cfg: Any) -> dict[str, str]:
    """metrics.json ``definitions``: one entry per metrics.csv quantity."""
    level = f"{cfg.ci_level:.0%}"
    return {
        "fd": "||mu1-mu2||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)), unbiased covariances, float64",
        "fd_ci": fd_interval(cfg),
        "fd_real": ("expected FD of as many real shapes images against the same reference (the floor at this N): "
                    f"the mean over {cfg.fd_real_draws} independent real sets"),
        "fd_excess": (f"fd - fd_real: FD above real images at the same N, comparable across N; interval {level} "
                      "fd_excess -+ t_(G-1) sqrt(se_fd^2 + se_real^2), se_fd jackknife, se_real = sd of the real "
                      f"sets / sqrt({cfg.fd_real_draws})"),
        "fd_inf": (f"FD-infinity (Chong & Forsyth 2020): FD of random subsets of the row at 15 sizes from "
                   f"max(N/5, {cfg.fd_inf_min_n // 2}) to N (3 subsets per size), least-squares line in 1/N, value "
                   f"at 1/N = 0; empty below N = {cfg.fd_inf_min_n}; no interval"),
        "kid": f"unbiased MMD^2, kernel (x.y/d + 1)^3, {cfg.kid_subsets} subsets of min({cfg.kid_subset_size}, N)",
        "kid_std": "the spread (population std) of the per-subset KID values (torch-fidelity's kid_std); not a "
                   "standard error",
        "kid_se": ("standard error: leave-one-out jackknife over the row's images of the complete unbiased MMD^2 of "
                   "all N images against all reference images (Arvesen 1969), reference fixed"),
        "precision_recall": (f"Kynkaanniemi et al. 2019, k = {cfg.prdc_k}: share of generated images inside some "
                             "reference image's k-NN ball / of reference images inside some generated image's "
                             "k-NN ball; FD feature space, Euclidean, closed balls"),
        "density_coverage": (f"Naeem et al. 2020, k = {cfg.prdc_k}: mean number of reference k-NN balls holding "
                             "each generated image / k; share of reference images whose ball holds a generated "
                             f"image; against the first min({cfg.prdc_ref_n}, group size) reference images of the "
                             "row's group; recall and coverage depend on N: compare rows of equal N"),
        "cmmd": cmmd_definition(cfg),
        "cmmd_ci": (f"{level} leave-one-out jackknife over the row's images, CMMD -+ t_(N-1) se, reference fixed"),
        "clip_score": "mean over images of max(100 cos(image, caption), 0) (the clamp per image)",
        "alignment": "fraction of images the exact shapes detector scores correct",
        "ci": (f"fd, fd_excess, cmmd: {level} jackknife intervals (above); clip_score, alignment: {level} "
               f"percentile bootstrap over images, {cfg.bootstrap} resamples, seed {cfg.seed}"),
    }


def cmmd_definition(cfg: Any) -> str:
    base = "MMD^2 x1000, RBF sigma 10 on L2-normalised embeddings (Jayasumana et al. 2024)"
    if cfg.cmmd_estimator == "biased":
        return (f"{base}, biased (V-statistic) estimator, as the CMMD reference code: means include the diagonals; "
                "its floor for real images falls with N, so compare rows of equal N only")
    return (f"{base}, unbiased (U-statistic) estimator (Gretton et al. 2012): self-kernel means over i != j; "
            "expectation independent of N, can be slightly negative; the reference code's (biased) numbers "
            "differ by O(1/N)")


def conventions() -> dict[str, str]:
    """metrics.json ``conventions``: where this harness differs from, or chooses between, other tools."""
    return {
        "inception_resize": ("FID features: torch-fidelity's TF1-compatible bilinear resize to 299x299 without "
                             "antialiasing (the original TF FID graph); torchmetrics' FrechetInceptionDistance "
                             "defaults to antialias=True and clean-fid resizes with PIL bicubic, so their FIDs "
                             "differ from these"),
        "clip_score_clamp": ("each image's 100 cos is clamped at 0 and then averaged; torchmetrics' CLIPScore "
                             "averages first and clamps the mean (equal whenever every cosine is >= 0)"),
        "fd_covariance": "unbiased covariances (N - 1), float64, as pytorch-fid, torch-fidelity and torchmetrics",
        "kid_estimator": "torch-fidelity's: unbiased MMD^2, diagonals of K_xx and K_yy dropped, all of K_xy kept",
        "intervals": ("every interval holds the reference fixed (the reference statistics are a named, cached "
                      "artifact) and describes the row's own images at its N"),
        "extractor_resize": "how images reach each extractor: extractors.<name>.resize",
    }
