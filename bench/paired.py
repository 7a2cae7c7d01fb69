"""Paired verdicts between two runs over the same prompts: better, worse, or no evidence.

Two runs of the same prompt set (same ``prompt_id``; usually the same seeds too) are *paired*:
a prompt that is hard for run A is hard for run B. Comparing their per-row means with two
independent intervals wastes that pairing; the difference of the paired per-prompt values has
a much smaller spread.

- Per-image quantities (``clip_score`` and exact alignment ``correct`` from ``RUN/image_scores.csv``):
  **paired bootstrap over prompts**. Per (guidance weight, category) and per prompt, the mean over
  that prompt's images in each run (over ``sample_index``; one image per prompt in most runs); the
  prompts present in both runs are resampled with replacement, the *same* resample for both runs,
  and the statistic is ``mean(B) - mean(A)`` over the resampled prompts. Interval: the percentile
  interval at ``ci_level`` of ``n_boot`` resamples (numpy ``default_rng(seed)``). Pairing is by prompt,
  so it stays valid when the runs used different per-image seeds (the noise then differs too; the
  interval covers both runs' noise, because it is the spread of the per-prompt differences).
- Set-level metrics (FD, KID, CMMD) have no per-image values: the difference of the two values with
  the interval ``diff +- sqrt(h_a^2 + h_b^2)``, ``h`` each run's own calibrated half-width from
  metrics.csv (``fd_ci_low/high``: jackknife; ``cmmd_ci_low/high``: jackknife; ``kid``: z x ``kid_se``).
  This **ignores the pairing**: conservative (too wide) for paired runs, exact-ish for independent ones.

Verdict (direction-aware): ``better`` when the interval of ``B - A`` lies entirely on the good side of 0
(above 0 for higher-is-better ``clip_score`` / ``alignment``, below 0 for lower-is-better FD / KID /
CMMD), ``worse`` when entirely on the bad side, else ``no evidence`` (the interval contains 0, or a
side has no value).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Iterable, Literal

import numpy as np
import pandas as pd

from bench import rundir

BETTER, WORSE, NO_EVIDENCE = "better", "worse", "no evidence"
PAIRED_COLUMNS = ["metric", "guidance_weight", "category", "a", "b", "diff", "ci_low", "ci_high", "verdict", "method"]
# image-level columns a paired comparison needs (also what bench.regress stores in a baseline)
IMAGE_COLUMNS = ["prompt_id", "sample_index", "guidance_weight", "category", "clip_score", "correct"]


@dataclass(frozen=True)
class MetricKind:
    """How one metrics.csv value is compared between runs."""

    direction: Literal["higher", "lower"]
    image_column: str | None = None          # per-image column (paired bootstrap), or
    ci: tuple[str, str] | None = None        # interval columns of metrics.csv (independent half-widths), or
    se: str | None = None                    # a standard-error column (half-width = z x se)


METRICS: dict[str, MetricKind] = {
    "clip_score": MetricKind("higher", image_column="clip_score"),
    "alignment": MetricKind("higher", image_column="correct"),
    "fd": MetricKind("lower", ci=("fd_ci_low", "fd_ci_high")),
    "cmmd": MetricKind("lower", ci=("cmmd_ci_low", "cmmd_ci_high")),
    "kid": MetricKind("lower", se="kid_se"),
}


class PairedError(ValueError):
    """The runs cannot be paired (no per-image scores, no shared prompts)."""


def _z(ci_level: float) -> float:
    return NormalDist().inv_cdf(0.5 + ci_level / 2)


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def verdict(ci_low: float, ci_high: float, direction: str) -> str:
    """``better`` / ``worse`` / ``no evidence`` for an interval of ``B - A``."""
    if not (_finite(ci_low) and _finite(ci_high)):
        return NO_EVIDENCE
    if ci_low > 0:
        return BETTER if direction == "higher" else WORSE
    if ci_high < 0:
        return WORSE if direction == "higher" else BETTER
    return NO_EVIDENCE


# ---------------------------------------------------------------- per-image values


def _as_number(col: pd.Series) -> pd.Series:
    if col.dtype == bool or str(col.dtype) == "boolean":
        return col.astype("Float64").astype(float)
    s = col.astype(str).str.strip().str.lower().map({"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0,
                                                     "1.0": 1.0, "0.0": 0.0})
    num = pd.to_numeric(col, errors="coerce")
    return s.where(s.notna(), num).astype(float)


def image_values(run_dir: str | Path) -> pd.DataFrame:
    """Per image of a run: IMAGE_COLUMNS (``correct`` as 1.0 / 0.0 / NaN), from image_scores.csv joined
    with manifest.csv on ``path`` (for ``sample_index``). Raises PairedError without image_scores.csv."""
    run_dir = Path(run_dir)
    path = run_dir / rundir.IMAGE_SCORES
    if not path.is_file():
        raise PairedError(f"{path} not found: score the run (python -m bench.metrics.score_run {run_dir})")
    per = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"path": str, "prompt_id": str,
                                                                             "category": str})
    if "sample_index" not in per.columns:
        try:
            man = rundir.read_manifest(run_dir, required=("path",))
        except rundir.ManifestError:
            man = None
        if man is not None and "sample_index" in man.columns:
            idx = dict(zip(man["path"].astype(str), man["sample_index"]))
            per["sample_index"] = per["path"].map(idx)
        else:
            per["sample_index"] = 0
    missing = [c for c in ("prompt_id", "guidance_weight", "category") if c not in per.columns]
    if missing:
        raise PairedError(f"{path} lacks the columns {missing}")
    out = pd.DataFrame({
        "prompt_id": per["prompt_id"].astype(str),
        "sample_index": pd.to_numeric(per["sample_index"], errors="coerce").fillna(0).astype(int),
        "guidance_weight": pd.to_numeric(per["guidance_weight"], errors="coerce").astype(float),
        "category": per["category"].astype(str),
        "clip_score": pd.to_numeric(per["clip_score"], errors="coerce") if "clip_score" in per else np.nan,
        "correct": _as_number(per["correct"]) if "correct" in per else np.nan,
    })
    return out[IMAGE_COLUMNS]


def per_prompt(images: pd.DataFrame, column: str, w: float, category: str) -> pd.Series:
    rows = images[np.isclose(images["guidance_weight"].astype(float), w)]
    if category != "all":
        rows = rows[rows["category"] == category]
    rows = rows[np.isfinite(rows[column].astype(float))]
    return rows.groupby("prompt_id")[column].mean()


def paired_bootstrap(a: pd.Series, b: pd.Series, *, n_boot: int = 2000, ci_level: float = 0.95,
                     seed: int = 0) -> tuple[float, float, float, float, int]:
    """Per-prompt values of two runs (indexed by prompt_id) -> (mean A, mean B, ci_low, ci_high, n_prompts)
    of ``B - A`` over the prompts in both, by bootstrap over prompts (same resample for both runs)."""
    common = a.index.intersection(b.index)
    if len(common) == 0:
        return float("nan"), float("nan"), float("nan"), float("nan"), 0
    xa = a.loc[common].to_numpy(float)
    xb = b.loc[common].to_numpy(float)
    d = xb - xa
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(int(n_boot), len(d)))
    boots = d[idx].mean(axis=1)
    alpha = (1 - ci_level) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha])
    return float(xa.mean()), float(xb.mean()), float(lo), float(hi), len(common)


def independent_interval(a: float, h_a: float, b: float, h_b: float) -> tuple[float, float]:
    """``B - A`` +- sqrt(h_a^2 + h_b^2): two independent estimates' half-widths in quadrature."""
    if not all(_finite(x) for x in (a, h_a, b, h_b)):
        return float("nan"), float("nan")
    half = math.hypot(float(h_a), float(h_b))
    d = float(b) - float(a)
    return d - half, d + half


def half_width(row: pd.Series | dict, kind: MetricKind, ci_level: float = 0.95) -> float:
    """A metrics.csv row's half-width for a set-level metric (NaN when the columns are absent / empty)."""
    get = row.get if hasattr(row, "get") else (lambda k, d=None: row[k] if k in row else d)
    if kind.ci is not None:
        lo, hi = get(kind.ci[0]), get(kind.ci[1])
        if _finite(lo) and _finite(hi):
            return (float(hi) - float(lo)) / 2
    if kind.se is not None and _finite(get(kind.se)):
        return _z(ci_level) * float(get(kind.se))
    return float("nan")


def describe_method(metric: str, kind: MetricKind) -> str:
    if kind.image_column is not None:
        return f"paired bootstrap over prompts ({kind.image_column})"
    cols = "/".join(kind.ci) if kind.ci else f"z x {kind.se}"
    return f"independent half-widths in quadrature ({cols}; ignores the pairing: conservative)"


def paired_rows(images_a: pd.DataFrame | None, images_b: pd.DataFrame | None, table_a: pd.DataFrame,
                table_b: pd.DataFrame, *, metrics: Iterable[str] | None = None, n_boot: int = 2000,
                ci_level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """One row per (metric, guidance weight, category) present in both metrics tables: PAIRED_COLUMNS.

    ``a`` / ``b`` are the metrics.csv values (for per-image metrics too, so they match the runs' tables);
    ``diff`` = b - a. Per-image metrics fall back to independent intervals (their ci columns
    ``{metric}_ci_low/high``) when a side has no per-image values.
    """
    names = [m for m in (metrics or METRICS) if m in METRICS]
    ib = {(float(w), str(c)): i for i, (w, c) in enumerate(zip(table_b["guidance_weight"], table_b["category"]))}
    rows = []
    for _, ra in table_a.iterrows():
        key = (float(ra["guidance_weight"]), str(ra["category"]))
        if key not in ib:
            continue
        rb = table_b.iloc[ib[key]]
        for m in names:
            kind = METRICS[m]
            if m not in table_a.columns and m not in table_b.columns:
                continue
            va, vb = ra.get(m, np.nan), rb.get(m, np.nan)
            va = float(va) if _finite(va) else float("nan")
            vb = float(vb) if _finite(vb) else float("nan")
            lo = hi = float("nan")
            method = describe_method(m, kind)
            if kind.image_column is not None and images_a is not None and images_b is not None:
                pa = per_prompt(images_a, kind.image_column, key[0], key[1])
                pb = per_prompt(images_b, kind.image_column, key[0], key[1])
                ma, mb, lo, hi, n = paired_bootstrap(pa, pb, n_boot=n_boot, ci_level=ci_level, seed=seed)
                if n == 0:
                    lo = hi = float("nan")
                method += f", {n} prompts"
                if not math.isfinite(va) and math.isfinite(ma):
                    va = ma
                if not math.isfinite(vb) and math.isfinite(mb):
                    vb = mb
            else:
                if kind.image_column is not None:  # no per-image values: the rows' own intervals
                    kind = MetricKind(kind.direction, ci=(f"{m}_ci_low", f"{m}_ci_high"))
                    method = describe_method(m, kind)
                lo, hi = independent_interval(va, half_width(ra, kind, ci_level), vb, half_width(rb, kind, ci_level))
            if not (math.isfinite(va) and math.isfinite(vb)):
                continue
            rows.append({"metric": m, "guidance_weight": key[0], "category": key[1], "a": va, "b": vb,
                         "diff": vb - va, "ci_low": lo, "ci_high": hi,
                         "verdict": verdict(lo, hi, kind.direction), "method": method})
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def compare_pair(run_a: str | Path, run_b: str | Path, *, metrics: Iterable[str] | None = None, n_boot: int = 2000,
                 ci_level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Paired verdicts of run B against run A (both scored): PAIRED_COLUMNS, ``diff`` = B - A."""
    tables = []
    for r in (run_a, run_b):
        f = Path(r) / rundir.METRICS
        if not f.is_file():
            raise PairedError(f"{f} does not exist: score the run first (python -m bench.metrics.score_run {r})")
        tables.append(rundir.read_metrics(f))
    images = []
    for r in (run_a, run_b):
        try:
            images.append(image_values(r))
        except PairedError:
            images.append(None)
    if images[0] is not None and images[1] is not None and \
            not set(images[0]["prompt_id"]) & set(images[1]["prompt_id"]):
        raise PairedError(f"{run_a} and {run_b} share no prompt_id: not paired (use the same prompts.seed / set)")
    return paired_rows(images[0], images[1], tables[0], tables[1], metrics=metrics, n_boot=n_boot,
                       ci_level=ci_level, seed=seed)


def format_paired(table: pd.DataFrame) -> str:
    cols = [c for c in ("run",) if c in table.columns] + [c for c in PAIRED_COLUMNS if c != "method"]
    view = table[cols].rename(columns={"guidance_weight": "w"})
    return view.to_string(index=False, float_format=lambda v: f"{v:.4g}")
