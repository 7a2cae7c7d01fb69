"""Sample-quality regression check: a run's ``metrics.csv`` against a committed baseline.

    python -m bench.regress run=RUN_DIR baseline=FILE               # exit 1 naming each regressed metric
    python -m bench.regress run=RUN_DIR baseline=FILE update=true   # (re)write the baseline from RUN_DIR

The baseline (JSON) holds, per (metric, guidance weight, category), the direction (higher or
lower is better), the value, the tolerance and how the tolerance was derived, plus the run's
configuration, fingerprint (prompts, seeds, weights, image size, sampler, metrics settings), git
revision and checkpoint hashes. A metric regressed when it is worse than the baseline by more
than its tolerance:

- ``method: ci`` (default): tolerance = k * (half-width of the baseline row's confidence interval,
  from metrics.csv) + abs_floor + rel_floor * |value|. Two independent estimates whose 95%
  intervals have half-width h differ by at most sqrt(2) h ~ 1.41 h (95%); k = 1.5 rounds that up.
  Metrics without an interval column get the floors only.
- ``method: seeds``: the half-width is z * s, with s the standard deviation of the metric over
  the baseline run and runs of the same configuration at other seeds (``seed_runs``), z = 1.96.

Exit status: 0 no regression; 1 a metric regressed (or could no longer be computed); 2 the
inputs are wrong (missing file or column, a baseline made with another configuration).
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

from bench import rundir
from bench.runinfo import git_revision
from bench.shapes_clip.model import DEFAULT_WEIGHTS
from imagen.cascade import REPO_ROOT

FORMAT = "imagen-bench/regression-baseline/v1"
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
    "cmmd": MetricSpec("lower", None, rel_floor=0.25),
    "kid": MetricSpec("lower", std="kid_std", rel_floor=0.05),
}


@dataclass
class ToleranceRule:
    """How ``update=true`` derives tolerances (stored in the baseline; a check uses the stored values)."""

    method: Literal["ci", "seeds"] = "ci"
    k: float = 1.5
    seed_runs: list[str] = field(default_factory=list)
    categories: list[str] | None = None   # None: every category row of metrics.csv
    metrics: dict[str, MetricSpec] = field(default_factory=lambda: dict(DEFAULT_METRICS))

    def __post_init__(self) -> None:
        if self.method not in ("ci", "seeds"):
            raise ValueError(f"tolerance.method must be 'ci' or 'seeds', got {self.method!r}")
        if not (self.k >= 0 and math.isfinite(self.k)):
            raise ValueError(f"tolerance.k must be a finite number >= 0, got {self.k!r}")
        if self.method == "seeds" and not self.seed_runs:
            raise ValueError("tolerance.method=seeds needs tolerance.seed_runs=[RUN_DIR, ...] "
                             "(runs of the same configuration at other seeds)")
        self.metrics = {k: v if isinstance(v, MetricSpec) else MetricSpec(**v) for k, v in self.metrics.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ToleranceRule":
        known = {"method", "k", "seed_runs", "categories", "metrics"}
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
        if self.method == "ci":
            return (f"tolerance = {self.k:g} x half-width of the baseline row's confidence interval (metrics.csv) "
                    "+ abs_floor + rel_floor x |value|; sqrt(2) x half-width bounds the difference of two "
                    "independent estimates (95%)")
        return (f"tolerance = {self.k:g} x {Z95:.2f} x standard deviation over {1 + len(self.seed_runs)} runs at "
                "different seeds + abs_floor + rel_floor x |value|")


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


def _fingerprint_diff(base: dict[str, Any], now: dict[str, Any]) -> list[str]:
    diffs = []
    for key in sorted(set(base) | set(now)):
        a, b = base.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            for sub in sorted(set(a) | set(b)):
                if a.get(sub) != b.get(sub):
                    diffs.append(f"{key}.{sub}: baseline {a.get(sub)!r}, run {b.get(sub)!r}")
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
    tol = rule.k * half + spec.abs_floor + spec.rel_floor * abs(value)
    return {
        "metric": metric, "guidance_weight": float(row["guidance_weight"]), "category": str(row["category"]),
        "direction": spec.direction, "value": value, "tolerance": tol,
        "num_images": int(row["num_images"]) if "num_images" in row and _finite(row["num_images"]) else None,
        "tolerance_from": (f"{rule.k:g} x {half:.6g} ({how}) + abs_floor {spec.abs_floor:g} + rel_floor "
                           f"{spec.rel_floor:g} x |{value:.6g}|"),
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
    return {
        "format": FORMAT,
        "created": pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"),
        "made_with_git_revision": git_revision(REPO_ROOT),
        "source": _provenance(run_dir),
        "fingerprint": fp,
        "tolerance_rule": {"description": rule.describe(), **asdict(rule)},
        "not_gated": sorted(set(not_gated)),
        "entries": entries,
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
        raise RegressError(f"baseline {path}: format {data.get('format')!r}, expected {FORMAT!r}")
    for i, e in enumerate(data.get("entries", [])):
        missing = [k for k in ("metric", "guidance_weight", "category", "direction", "value", "tolerance") if k not in e]
        if missing:
            raise RegressError(f"baseline {path}: entry {i} lacks {missing}")
    return data


# ---------------------------------------------------------------- checking a run


def compare(run_dir: Path, baseline: dict[str, Any]) -> pd.DataFrame:
    """One row per baseline entry: metric, guidance_weight, category, baseline, now, tolerance, delta, verdict.

    ``verdict``: ok | improved (better by more than the tolerance) | REGRESSED | MISSING (no value now).
    Raises BaselineMismatch when the run was made with another configuration than the baseline.
    """
    run_dir = Path(run_dir)
    table = read_metrics(run_dir)
    diffs = _fingerprint_diff(baseline.get("fingerprint", {}), fingerprint(run_dir))
    if diffs:
        raise BaselineMismatch(
            f"{run_dir} was made with another configuration than the baseline "
            f"({baseline.get('source', {}).get('run_dir', '?')}):\n  " + "\n  ".join(diffs) +
            "\nRun the baseline's configuration, or make a new baseline deliberately with update=true.")
    _check_columns(table, sorted({e["metric"] for e in baseline["entries"]}), run_dir / rundir.METRICS)
    index = {(float(w), str(c)): i for i, (w, c) in enumerate(zip(table["guidance_weight"], table["category"]))}
    rows = []
    for e in baseline["entries"]:
        key = (float(e["guidance_weight"]), str(e["category"]))
        if key not in index:
            raise BaselineMismatch(f"{run_dir / rundir.METRICS} has no row for w={key[0]:g}, category {key[1]!r} "
                                   "that the baseline guards")
        now = table.iloc[index[key]][e["metric"]]
        rows.append({"metric": e["metric"], "guidance_weight": key[0], "category": key[1],
                     "baseline": float(e["value"]), "now": float(now) if _finite(now) else float("nan"),
                     "tolerance": float(e["tolerance"]), "direction": e["direction"]})
    out = pd.DataFrame(rows, columns=["metric", "guidance_weight", "category", "baseline", "now", "tolerance",
                                      "direction"])
    sign = np.where(out["direction"] == "higher", 1.0, -1.0)
    out["delta"] = (out["now"] - out["baseline"]) * sign  # > 0: better
    out["verdict"] = np.select([out["now"].isna(), out["delta"] < -out["tolerance"], out["delta"] > out["tolerance"]],
                               ["MISSING", "REGRESSED", "improved"], "ok")
    return out


def failures(result: pd.DataFrame) -> list[str]:
    """One line per regressed or missing metric, naming it."""
    bad = result[result["verdict"].isin(["REGRESSED", "MISSING"])]
    return [f"{r.verdict}: {r.metric} at w={r.guidance_weight:g}, category {r.category}: baseline "
            f"{r.baseline:.4g}, now {r.now:.4g} ({'higher' if r.direction == 'higher' else 'lower'} is better, "
            f"tolerance {r.tolerance:.3g})" for r in bad.itertuples()]


def format_table(result: pd.DataFrame) -> str:
    view = result[["metric", "guidance_weight", "category", "baseline", "now", "tolerance", "verdict"]].rename(
        columns={"guidance_weight": "w"})
    return view.to_string(index=False, float_format=lambda v: f"{v:.4g}")


# ---------------------------------------------------------------- command line


def run_check(run_dir: Path, baseline_path: Path, update: bool = False, rule: ToleranceRule | None = None,
              out: Any = sys.stdout) -> int:
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
            print(f"baseline written: {baseline_path} ({len(new['entries'])} gated values from {run_dir}; "
                  f"{new['tolerance_rule']['description']})", file=out)
            if old is not None:
                print(f"replaced the baseline of {old.get('source', {}).get('run_dir')} "
                      f"({old.get('created')}); review the change in version control", file=out)
            return EXIT_OK
        baseline = load_baseline(baseline_path)
        result = compare(run_dir, baseline)
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
    note = f"; {better} improved beyond tolerance (update the baseline deliberately with update=true)" if better else ""
    print(f"bench.regress: no regression ({len(result)} values within tolerance of {baseline_path}){note}", file=out)
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
        except (TypeError, ValueError) as e:
            print(f"bench.regress: tolerance settings (conf/regress.yaml): {e}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        # item access: ``cfg.update`` would be the mapping's update() method
        status = run_check(Path(str(cfg["run"])), Path(str(cfg["baseline"])), bool(cfg["update"]), rule)
        if status:
            sys.exit(status)

    _main()


if __name__ == "__main__":
    main()
