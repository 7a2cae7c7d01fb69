"""Sample-quality regression check: a run's ``metrics.csv`` against a committed baseline.

    python -m bench.regress run=RUN_DIR baseline=FILE               # exit 1 naming each regressed metric
    python -m bench.regress run=RUN_DIR baseline=FILE update=true   # (re)write the baseline from RUN_DIR

The baseline (JSON, format v2) holds, per (metric, guidance weight, category), the direction
(higher or lower is better), the value, its half-width and the practical floor, plus **the per-image
values** (per image: prompt_id, sample_index, guidance_weight, category, clip_score, correct), the
run's configuration, fingerprint (prompts, seeds, weights, image size, sampler, metrics settings),
git revision and checkpoint hashes.

A check is verdict-based (bench.paired): per entry, the difference ``now - baseline`` with an interval

- ``clip_score``, ``alignment`` (per-image ``correct``): paired bootstrap over prompts (resample the
  prompt ids present in both, the same resample for baseline and run; difference of means;
  percentile interval at ``paired.ci_level``, ``paired.n_boot`` resamples, ``paired.seed``);
- ``fd``, ``cmmd``, ``kid``: ``diff +- sqrt(h_base^2 + h_run^2)``, h the half-width of each side's own
  calibrated interval (``fd_ci_*`` jackknife, ``cmmd_ci_*``, 1.96 x ``kid_se``; ``method: seeds``: the
  baseline's z x std over seed runs on both sides). This ignores the pairing: conservative.

and a value **REGRESSED** when the interval says *worse* (lies entirely on the bad side of 0) **and**
the worsening exceeds the practical floor ``abs_floor + rel_floor x |baseline value|`` (stored as
``floor``): a statistically clear but negligible change does not fail CI. ``improved``: the mirror
image (better and beyond the floor). ``ok``: anything else. ``MISSING``: no value any more.

``allow_other_seeds=true`` checks a run made with another ``seed`` (other per-image noise; same
prompts): the fingerprint then ignores ``seeds_sha256`` and ``generation.seed``. Pairing is by prompt,
so the bootstrap stays valid; this is how the false-alarm rate is measured (results/baselines/README.md).

Exit status: 0 no regression; 1 a metric regressed (or could no longer be computed); 2 the
inputs are wrong (missing file or column, a baseline made with another configuration or format).
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from bench import paired as pairedstats
from bench import rundir
from bench.runinfo import git_revision
from bench.shapes_clip.model import DEFAULT_WEIGHTS
from imagen.cascade import REPO_ROOT

FORMAT = "imagen-bench/regression-baseline/v2"
Z95 = 1.959963984540054
# metrics-config keys that change the numbers (device, workers, batch size, cache paths do not)
METRIC_KEYS = ("fd_extractor", "clip_backbone", "clip_model", "clip_pretrained", "reference", "ref_n", "ref_seed",
               "kid", "kid_subsets", "kid_subset_size", "cmmd", "cmmd_estimator", "alignment", "bootstrap",
               "fd_bootstrap", "fd_interval", "fd_jackknife_groups", "prdc_k", "prdc_ref_n", "ci_level", "seed")
# generation settings (generation.json, flattened) that change the images; model.* is what is under test
GENERATION_PREFIXES = ("guidance.", "sampler.", "seed", "samples_per_prompt")
EXIT_OK, EXIT_REGRESSED, EXIT_BAD_INPUT = 0, 1, 2


class RegressError(RuntimeError):
    """The inputs cannot be compared (missing file or column, malformed baseline)."""


class BaselineMismatch(RegressError):
    """The run and the baseline were made with different configurations."""


@dataclass
class MetricSpec:
    """How one metrics.csv column is gated."""

    direction: Literal["higher", "lower"]
    ci: tuple[str, str] | None = None   # interval columns (method ci)
    std: str | None = None              # or a standard-deviation column (half-width = z * std)
    abs_floor: float = 0.0
    rel_floor: float = 0.0

    def __post_init__(self) -> None:
        if self.direction not in ("higher", "lower"):
            raise ValueError(f"direction must be 'higher' or 'lower', got {self.direction!r}")
        if self.ci is not None:
            self.ci = (str(self.ci[0]), str(self.ci[1]))


DEFAULT_METRICS: dict[str, MetricSpec] = {
    "alignment": MetricSpec("higher", ("alignment_ci_low", "alignment_ci_high"), abs_floor=0.02),
    "clip_score": MetricSpec("higher", ("clip_score_ci_low", "clip_score_ci_high"), abs_floor=0.1),
    "fd": MetricSpec("lower", ("fd_ci_low", "fd_ci_high"), rel_floor=0.02),
    "cmmd": MetricSpec("lower", ("cmmd_ci_low", "cmmd_ci_high"), abs_floor=0.01),
    "kid": MetricSpec("lower", std="kid_se", rel_floor=0.05),
}


@dataclass
class ToleranceRule:
    """How ``update=true`` derives tolerances (stored in the baseline; a check uses the stored values)."""

    method: Literal["ci", "seeds"] = "ci"
    seed_runs: list[str] = field(default_factory=list)
    categories: list[str] | None = None   # None: every category row of metrics.csv
    metrics: dict[str, MetricSpec] = field(default_factory=lambda: dict(DEFAULT_METRICS))

    def __post_init__(self) -> None:
        if self.method not in ("ci", "seeds"):
            raise ValueError(f"tolerance.method must be 'ci' or 'seeds', got {self.method!r}")
        if self.method == "seeds" and not self.seed_runs:
            raise ValueError("tolerance.method=seeds needs tolerance.seed_runs=[RUN_DIR, ...] "
                             "(runs of the same configuration at other seeds)")
        self.metrics = {k: v if isinstance(v, MetricSpec) else MetricSpec(**v) for k, v in self.metrics.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ToleranceRule":
        known = {"method", "seed_runs", "categories", "metrics"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown tolerance keys {unknown}; known: {sorted(known)}")
        d = dict(d)
        if d.get("metrics") is not None:
            d["metrics"] = {name: MetricSpec(**spec) for name, spec in d["metrics"].items()}
        else:
            d.pop("metrics", None)
        d["seed_runs"] = [str(p) for p in d.get("seed_runs") or []]
        return cls(**d)

    def describe(self) -> str:
        spread = ("half-width of each side's confidence interval (metrics.csv)" if self.method == "ci" else
                  f"{Z95:.2f} x standard deviation over {1 + len(self.seed_runs)} runs at different seeds")
        return ("REGRESSED when the interval of (now - baseline) is entirely on the worse side of 0 AND the "
                "worsening exceeds floor = abs_floor + rel_floor x |baseline value|; interval: paired bootstrap "
                "over prompts for clip_score / alignment (per-image values stored in the baseline), "
                f"diff +- sqrt(h_base^2 + h_now^2) for fd / cmmd / kid with h the {spread} (ignores the pairing: "
                "conservative)")


# ---------------------------------------------------------------- reading a run


def _need_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise RegressError(f"{path} not found: {what}")
    return path


def read_metrics(run_dir: Path) -> pd.DataFrame:
    path = _need_file(Path(run_dir) / rundir.METRICS,
                      "the run has no metrics (run bench.run with metrics enabled, or python -m "
                      "bench.metrics.score_run RUN_DIR)")
    try:
        table = rundir.read_metrics(path)
    except ValueError as e:  # lacks guidance_weight / category
        raise RegressError(str(e)) from None
    dup = table.duplicated(["guidance_weight", "category"])
    if dup.any():
        raise RegressError(f"{path}: repeated rows for (guidance_weight, category) "
                           f"{table.loc[dup, ['guidance_weight', 'category']].values.tolist()[:3]}")
    return table


def fingerprint(run_dir: Path) -> dict[str, Any]:
    """What must match between a baseline and a run: prompts, seeds, weights, image size, sampler, metrics."""
    run_dir = Path(run_dir)
    _need_file(run_dir / rundir.MANIFEST, "not a run directory (python -m bench.run writes it)")
    try:
        man = rundir.read_manifest(run_dir, required=("prompt_id", "prompt", "category", "seed", "guidance_weight"))
    except rundir.ManifestError as e:
        raise RegressError(str(e)) from None
    prompts = sorted(set(zip(man["prompt_id"], man["prompt"], man["category"])))
    seeds = sorted(set(zip(man["prompt_id"], man.get("sample_index", man["seed"]), man["seed"])))
    sizes = sorted(set(zip(man.get("width", [""] * len(man)), man.get("height", [""] * len(man)))))
    out: dict[str, Any] = {
        "num_images": int(len(man)),
        "num_prompts": len(prompts),
        "guidance_weights": sorted({float(w) for w in man["guidance_weight"]}),
        "categories": dict(sorted(pd.Series([p[2] for p in prompts]).value_counts().items())),
        "image_size": ["x".join(s) for s in sizes],
        "prompts_sha256": hashlib.sha256(json.dumps(prompts).encode()).hexdigest(),
        "seeds_sha256": hashlib.sha256(json.dumps(seeds).encode()).hexdigest(),
    }
    gen = rundir.read_json(run_dir / rundir.GENERATION)
    if gen:
        out["generation"] = {k: v for k, v in sorted(gen.items()) if k.startswith(GENERATION_PREFIXES)}
    mcfg = rundir.read_json(run_dir / rundir.METRICS_JSON).get("config", {})
    if mcfg:
        out["metrics"] = {k: mcfg.get(k) for k in METRIC_KEYS if k in mcfg}
        weights = metric_weights(mcfg)
        if weights:
            out["metric_weights"] = weights
    return out


def metric_weights(mcfg: dict[str, Any]) -> dict[str, str]:
    """sha256 (16 hex) of the metric models' weight files now at the configured paths: numbers made with
    another shapes-CLIP / Inception / CLIP file are not comparable (metrics.json names the path only)."""
    uses = {mcfg.get("fd_extractor"), mcfg.get("clip_backbone")}
    files: dict[str, str | None] = {}
    if "shapes_clip" in uses:
        files["shapes_clip"] = mcfg.get("shapes_clip_path") or str(DEFAULT_WEIGHTS)
    if "inception" in uses:
        files["inception"] = mcfg.get("inception_weights")
    if "clip" in uses:
        files["clip"] = mcfg.get("clip_pretrained")
    out = {}
    for name, path in files.items():
        if path and Path(path).is_file():
            out[name] = rundir.file_sha256(path)[:16]
        elif path:
            out[name] = f"not a file: {path}"
    return out


def _with_added_keys(fp: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """A fingerprint (a baseline's, or an older run's) with the generation keys added since, at their old value,
    where the fingerprint it is compared with has them."""
    if "generation" not in fp:
        return fp
    return {**fp, "generation": rundir.with_added_keys(fp["generation"], other.get("generation", {}))}


def _fingerprint_diff(base: dict[str, Any], now: dict[str, Any]) -> list[str]:
    diffs = []
    for key in sorted(set(base) | set(now)):
        a, b = base.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{key}.{sub}: baseline {a.get(sub)!r}, run {b.get(sub)!r}" for sub in rundir.differing_keys(a, b)]
        elif a is None or b is None:
            continue  # recorded on one side only (e.g. a run scored outside bench.run): not comparable
        elif a != b:
            diffs.append(f"{key}: baseline {a!r}, run {b!r}")
    return diffs


def _provenance(run_dir: Path) -> dict[str, Any]:
    """The configuration, git revision and checkpoints that produced the run."""
    info = rundir.read_json(run_dir / rundir.RUN_INFO)
    out: dict[str, Any] = {
        "run_dir": str(run_dir),
        "git_revision": info.get("git_revision", "unknown (no run_info.json)"),
        "command": info.get("command"),
        "checkpoints": [{k: st.get(k) for k in ("kind", "checkpoint", "sha256", "train_steps", "random_init")}
                        for st in info.get("stages", [])],
        "random_weights": info.get("random_weights"),
    }
    config = rundir.read_config(run_dir)
    if config is not None:
        out["config"] = config
        overrides = rundir.read_hydra_file(run_dir, "overrides")
        if overrides is not None:
            out["overrides"] = overrides
    else:
        out["config"] = {"generation": rundir.read_json(run_dir / rundir.GENERATION),
                         "metrics": rundir.read_json(run_dir / rundir.METRICS_JSON).get("config")}
    return out


# ---------------------------------------------------------------- making a baseline


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _half_width_ci(row: pd.Series, spec: MetricSpec) -> tuple[float, str]:
    if spec.ci is not None:
        lo, hi = row[spec.ci[0]], row[spec.ci[1]]
        if _finite(lo) and _finite(hi):
            return (float(hi) - float(lo)) / 2, f"half-width of [{spec.ci[0]}, {spec.ci[1]}]"
    if spec.std is not None and _finite(row[spec.std]):
        return Z95 * float(row[spec.std]), f"{Z95:.2f} x {spec.std}"
    return 0.0, "no interval in metrics.csv"


def _entry(metric: str, spec: MetricSpec, row: pd.Series, rule: ToleranceRule,
           spread: tuple[float, str]) -> dict[str, Any]:
    value = float(row[metric])
    half, how = spread
    floor = spec.abs_floor + spec.rel_floor * abs(value)
    paired = metric in pairedstats.METRICS and pairedstats.METRICS[metric].image_column is not None
    return {
        "metric": metric, "guidance_weight": float(row["guidance_weight"]), "category": str(row["category"]),
        "direction": spec.direction, "value": value, "floor": floor,
        "floor_from": f"abs_floor {spec.abs_floor:g} + rel_floor {spec.rel_floor:g} x |{value:.6g}|",
        "half_width": half, "half_width_from": how,
        "interval": ("paired bootstrap over prompts (per-image values in 'images'; half_width is the fallback "
                     "when a side has none)" if paired else
                     "diff +- sqrt(half_width^2 + h_now^2) (independent; ignores the pairing: conservative)"),
        "num_images": int(row["num_images"]) if "num_images" in row and _finite(row["num_images"]) else None,
    }


def make_baseline(run_dir: Path, rule: ToleranceRule | None = None) -> dict[str, Any]:
    """A baseline from a finished run: one entry per gated (metric, guidance weight, category) with a value."""
    rule = rule or ToleranceRule()
    run_dir = Path(run_dir)
    table = read_metrics(run_dir)
    _check_columns(table, rule.metrics, run_dir / rundir.METRICS, need_intervals=rule.method == "ci")
    fp = fingerprint(run_dir)
    seed_tables = [read_metrics(Path(p)) for p in rule.seed_runs]
    if rule.categories is not None:
        table = table[table["category"].isin(rule.categories)]
        if table.empty:
            raise RegressError(f"no rows of {run_dir / rundir.METRICS} have a category in {rule.categories}")
    entries, not_gated = [], []
    for _, row in table.iterrows():
        for metric, spec in rule.metrics.items():
            if not _finite(row[metric]):
                not_gated.append(f"{metric} (w={row['guidance_weight']:g}, {row['category']}): empty")
                continue
            spread = (_half_width_ci(row, spec) if rule.method == "ci" else
                      _half_width_seeds(metric, row, seed_tables, rule.seed_runs))
            entries.append(_entry(metric, spec, row, rule, spread))
    if not entries:
        raise RegressError(f"{run_dir / rundir.METRICS} has no value for any gated metric "
                           f"({', '.join(rule.metrics)}): nothing to guard")
    try:
        images = pairedstats.image_values(run_dir)
        images = [{"prompt_id": str(r.prompt_id), "sample_index": int(r.sample_index),
                   "guidance_weight": float(r.guidance_weight), "category": str(r.category),
                   "clip_score": float(r.clip_score) if _finite(r.clip_score) else None,
                   "correct": (bool(r.correct) if _finite(r.correct) else None)} for r in images.itertuples()]
    except pairedstats.PairedError as e:
        images = []
        not_gated.append(f"no per-image values ({e}): clip_score / alignment use independent intervals")
    return {
        "format": FORMAT,
        "created": pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"),
        "made_with_git_revision": git_revision(REPO_ROOT),
        "source": _provenance(run_dir),
        "fingerprint": fp,
        "tolerance_rule": {"description": rule.describe(), **asdict(rule)},
        "not_gated": sorted(set(not_gated)),
        "entries": entries,
        "images": images,
    }


def _half_width_seeds(metric: str, row: pd.Series, seed_tables: list[pd.DataFrame],
                      seed_runs: Sequence[str]) -> tuple[float, str]:
    values = [float(row[metric])]
    for t, path in zip(seed_tables, seed_runs):
        if metric not in t.columns:
            raise RegressError(f"{path}/metrics.csv lacks the column {metric!r}")
        hit = t[(t["guidance_weight"] == row["guidance_weight"]) & (t["category"] == row["category"])]
        if hit.empty or not _finite(hit[metric].iloc[0]):
            raise RegressError(f"{path}/metrics.csv has no {metric} for w={row['guidance_weight']:g}, "
                               f"category {row['category']!r}: seed runs must use the same configuration")
        values.append(float(hit[metric].iloc[0]))
    s = float(np.std(values, ddof=1))
    return Z95 * s, f"{Z95:.2f} x std {s:.6g} over {len(values)} seeds"


def _check_columns(table: pd.DataFrame, metrics: dict[str, MetricSpec] | Sequence[str], path: Path,
                   need_intervals: bool = False) -> None:
    cols = list(metrics)
    if need_intervals and isinstance(metrics, dict):
        cols += [c for spec in metrics.values() for c in ((spec.ci or ()) + ((spec.std,) if spec.std else ()))]
    missing = [c for c in dict.fromkeys(cols) if c not in table.columns]
    if missing:
        raise RegressError(f"{path} lacks the columns {missing} (metrics.csv made by an older or other tool?)")


def write_baseline(baseline: dict[str, Any], path: Path) -> None:
    """Write the baseline JSON atomically (never a half-written file)."""
    rundir.atomic_write_text(json.dumps(baseline, indent=2, sort_keys=False) + "\n", path)


def load_baseline(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RegressError(f"baseline {path} not found; make it from a good run with "
                           f"`python -m bench.regress run=RUN_DIR baseline={path} update=true`")
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise RegressError(f"baseline {path} is not valid JSON: {e}") from None
    if data.get("format") != FORMAT:
        raise RegressError(f"baseline {path}: format {data.get('format')!r}, expected {FORMAT!r}; remake it from "
                           f"a good run: python -m bench.regress run=RUN_DIR baseline={path} update=true")
    for i, e in enumerate(data.get("entries", [])):
        missing = [k for k in ("metric", "guidance_weight", "category", "direction", "value", "floor", "half_width")
                   if k not in e]
        if missing:
            raise RegressError(f"baseline {path}: entry {i} lacks {missing}")
    return data


# ---------------------------------------------------------------- checking a run


@dataclass
class PairedSettings:
    """The check's interval settings (conf/regress.yaml ``paired``)."""

    n_boot: int = 2000
    ci_level: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if not (0 < float(self.ci_level) < 1):
            raise ValueError(f"paired.ci_level must be in (0, 1), got {self.ci_level!r}")
        if int(self.n_boot) < 100:
            raise ValueError(f"paired.n_boot must be >= 100, got {self.n_boot!r}")


SEED_KEYS = ("seeds_sha256", "generation.seed")


def _baseline_images(baseline: dict[str, Any]) -> pd.DataFrame | None:
    imgs = baseline.get("images") or []
    if not imgs:
        return None
    t = pd.DataFrame(imgs)
    missing = [c for c in pairedstats.IMAGE_COLUMNS if c not in t.columns]
    if missing:
        raise RegressError(f"baseline images lack {missing}")
    t["prompt_id"] = t["prompt_id"].astype(str)
    t["category"] = t["category"].astype(str)
    for c in ("guidance_weight", "clip_score", "correct"):
        t[c] = pd.to_numeric(t[c], errors="coerce").astype(float)
    return t


def compare(run_dir: Path, baseline: dict[str, Any], allow_other_seeds: bool = False,
            settings: PairedSettings | None = None) -> pd.DataFrame:
    """One row per baseline entry: metric, guidance_weight, category, baseline, now, diff, ci_low, ci_high,
    floor, direction, delta, paired (the interval's verdict), method, verdict.

    ``diff`` = now - baseline; ``delta`` = diff signed so that > 0 is better. ``verdict``: ok | improved
    (interval says better and |diff| > floor) | REGRESSED (interval says worse and |diff| > floor) |
    MISSING (no value now). Raises BaselineMismatch when the run was made with another configuration than
    the baseline (``allow_other_seeds``: another ``seed`` is allowed; pairing is by prompt).
    """
    st = settings or PairedSettings()
    run_dir = Path(run_dir)
    table = read_metrics(run_dir)
    base_fp, now_fp = baseline.get("fingerprint", {}), fingerprint(run_dir)
    diffs = _fingerprint_diff(_with_added_keys(base_fp, now_fp), _with_added_keys(now_fp, base_fp))
    if allow_other_seeds:
        diffs = [d for d in diffs if not d.startswith(tuple(k + ":" for k in SEED_KEYS))]
    if diffs:
        raise BaselineMismatch(
            f"{run_dir} was made with another configuration than the baseline "
            f"({baseline.get('source', {}).get('run_dir', '?')}):\n  " + "\n  ".join(diffs) +
            "\nRun the baseline's configuration, or make a new baseline deliberately with update=true"
            + ("" if allow_other_seeds else " (another seed only: allow_other_seeds=true)") + ".")
    _check_columns(table, sorted({e["metric"] for e in baseline["entries"]}), run_dir / rundir.METRICS)
    base_images = _baseline_images(baseline)
    try:
        run_images = pairedstats.image_values(run_dir)
    except pairedstats.PairedError:
        run_images = None
    method_rule = (baseline.get("tolerance_rule") or {}).get("method", "ci")
    index = {(float(w), str(c)): i for i, (w, c) in enumerate(zip(table["guidance_weight"], table["category"]))}
    rows = []
    for e in baseline["entries"]:
        key = (float(e["guidance_weight"]), str(e["category"]))
        if key not in index:
            raise BaselineMismatch(f"{run_dir / rundir.METRICS} has no row for w={key[0]:g}, category {key[1]!r} "
                                   "that the baseline guards")
        row = table.iloc[index[key]]
        metric, base = e["metric"], float(e["value"])
        now = float(row[metric]) if _finite(row[metric]) else float("nan")
        kind = pairedstats.METRICS.get(metric)
        lo = hi = float("nan")
        if kind is not None and kind.image_column and base_images is not None and run_images is not None:
            pa = pairedstats.per_prompt(base_images, kind.image_column, *key)
            pb = pairedstats.per_prompt(run_images, kind.image_column, *key)
            _, _, lo, hi, n = pairedstats.paired_bootstrap(pa, pb, n_boot=st.n_boot, ci_level=st.ci_level,
                                                            seed=st.seed)
            method = f"paired bootstrap, {n} prompts"
        else:
            h_base = float(e["half_width"])
            spec = DEFAULT_METRICS.get(metric)
            h_now = float("nan")
            if method_rule == "ci" and spec is not None:
                try:
                    h_now = _half_width_ci(row, spec)[0]
                except KeyError:  # the run's metrics.csv has no interval columns
                    h_now = float("nan")
            if not (_finite(h_now) and h_now > 0):
                h_now = h_base  # seeds method, or no interval in the run: the baseline's spread
            lo, hi = pairedstats.independent_interval(base, h_base, now, h_now)
            method = "independent half-widths (conservative)"
        rows.append({"metric": metric, "guidance_weight": key[0], "category": key[1], "baseline": base,
                     "now": now, "diff": now - base, "ci_low": lo, "ci_high": hi, "floor": float(e["floor"]),
                     "direction": e["direction"], "method": method,
                     "paired": pairedstats.verdict(lo, hi, e["direction"])})
    out = pd.DataFrame(rows, columns=["metric", "guidance_weight", "category", "baseline", "now", "diff", "ci_low",
                                      "ci_high", "floor", "direction", "method", "paired"])
    sign = np.where(out["direction"] == "higher", 1.0, -1.0)
    out["delta"] = out["diff"] * sign  # > 0: better
    beyond = out["diff"].abs() > out["floor"]
    out["verdict"] = np.select([out["now"].isna(), (out["paired"] == pairedstats.WORSE) & beyond,
                                (out["paired"] == pairedstats.BETTER) & beyond],
                               ["MISSING", "REGRESSED", "improved"], "ok")
    return out


def failures(result: pd.DataFrame) -> list[str]:
    """One line per regressed or missing metric, naming it."""
    bad = result[result["verdict"].isin(["REGRESSED", "MISSING"])]
    return [f"{r.verdict}: {r.metric} at w={r.guidance_weight:g}, category {r.category}: baseline "
            f"{r.baseline:.4g}, now {r.now:.4g}, diff {r.diff:+.4g} [{r.ci_low:.4g}, {r.ci_high:.4g}] "
            f"({'higher' if r.direction == 'higher' else 'lower'} is better; interval says {r.paired}, "
            f"floor {r.floor:.3g})" for r in bad.itertuples()]


def format_table(result: pd.DataFrame) -> str:
    view = result[["metric", "guidance_weight", "category", "baseline", "now", "diff"]].rename(
        columns={"guidance_weight": "w"}).copy()
    view["ci"] = [f"[{lo:.4g}, {hi:.4g}]" for lo, hi in zip(result["ci_low"], result["ci_high"])]
    view["floor"] = result["floor"]
    view["verdict"] = [v if v in ("REGRESSED", "MISSING", "improved") else f"ok ({p})"
                       for v, p in zip(result["verdict"], result["paired"])]
    return view.to_string(index=False, float_format=lambda v: f"{v:.4g}")


# ---------------------------------------------------------------- command line


def run_check(run_dir: Path, baseline_path: Path, update: bool = False, rule: ToleranceRule | None = None,
              out: Any = sys.stdout, allow_other_seeds: bool = False, settings: PairedSettings | None = None) -> int:
    """The command's work; returns the exit status (0 ok, 1 regressed, 2 bad input)."""
    try:
        if update:
            new = make_baseline(run_dir, rule)
            old = None
            if Path(baseline_path).is_file():
                try:
                    old = load_baseline(baseline_path)
                except RegressError:
                    old = None
            write_baseline(new, baseline_path)
            print(f"baseline written: {baseline_path} ({len(new['entries'])} gated values, "
                  f"{len(new['images'])} per-image records from {run_dir}; "
                  f"{new['tolerance_rule']['description']})", file=out)
            if old is not None:
                print(f"replaced the baseline of {old.get('source', {}).get('run_dir')} "
                      f"({old.get('created')}); review the change in version control", file=out)
            return EXIT_OK
        baseline = load_baseline(baseline_path)
        result = compare(run_dir, baseline, allow_other_seeds=allow_other_seeds, settings=settings)
    except RegressError as e:
        print(f"bench.regress: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(format_table(result), file=out)
    bad = failures(result)
    if bad:
        print("\n".join(bad), file=sys.stderr)
        print(f"bench.regress: {len(bad)} of {len(result)} values regressed against {baseline_path}", file=sys.stderr)
        return EXIT_REGRESSED
    better = int((result["verdict"] == "improved").sum())
    note = f"; {better} improved beyond the floor (update the baseline deliberately with update=true)" if better else ""
    print(f"bench.regress: no regression ({len(result)} values, none worse beyond its floor with an interval "
          f"excluding 0, against {baseline_path}){note}", file=out)
    return EXIT_OK


def main() -> None:
    if not any(a.startswith("-") for a in sys.argv[1:]):  # leave --help, --cfg ... to Hydra
        given = {a.split("=", 1)[0] for a in sys.argv[1:] if "=" in a}
        missing = [k for k in ("run", "baseline") if k not in given]
        if missing:
            print(f"bench.regress: missing {', '.join(missing)}; usage: python -m bench.regress "
                  "run=RUN_DIR baseline=FILE [update=true]", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)

    @hydra.main(version_base="1.3", config_path="../conf", config_name="regress")
    def _main(cfg: DictConfig) -> None:
        try:
            rule = ToleranceRule.from_dict(OmegaConf.to_container(cfg.tolerance, resolve=True))
            settings = PairedSettings(**OmegaConf.to_container(cfg.paired, resolve=True))
        except (TypeError, ValueError) as e:
            print(f"bench.regress: tolerance settings (conf/regress.yaml): {e}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        # item access: ``cfg.update`` would be the mapping's update() method
        status = run_check(Path(str(cfg["run"])), Path(str(cfg["baseline"])), bool(cfg["update"]), rule,
                           allow_other_seeds=bool(cfg["allow_other_seeds"]), settings=settings)
        if status:
            sys.exit(status)

    _main()


if __name__ == "__main__":
    main()
