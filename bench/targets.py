"""The shipped cascade's quality targets on shapes, measured on a finished run directory.

    python -m bench.targets RUN_DIR [RUN_DIR ...]   # prints the table, writes RUN_DIR/targets.csv and .png

Several run directories (the same prompts and weights at other seeds) are pooled: every accuracy counts the
images of all of them, ``alignment`` and ``fd_ratio`` are the means of the runs' values (runs without
``metrics.csv`` leave them out, with a warning), and ``targets.csv`` is written into the first.

Per guidance weight, from the exact scorer (``bench.shapes.detect.score``) on every image of
the run (its verdicts read from the metric phase's ``image_metrics.safetensors`` where the image
and scene are unchanged) and from the run's ``metrics.csv``:

- ``colors``: the DrawBench-style Colors category (one or two objects, each colour bound to its
  shape), exact detector;
- ``color_single``: colour accuracy on single-object Colors prompts (the requested colour is
  present); ``color_exact_single``: the object has the right colour *and* shape, nothing extra;
- ``counting``: Counting prompts with exactly the requested number of objects of that kind;
- ``positional``: Positional prompts with both objects found and the relation holding;
- ``alignment``: the run's ``alignment`` (all categories), ``fd`` and ``fd_real`` (the expected FD of as
  many real images: ``bench.metrics``) with ``fd_ratio = fd / fd_real``.

Each accuracy has a 95% Wilson score interval (Wilson 1927; ``<column>_low`` / ``_high``): at 20 prompts a
category's accuracy of 0.80 spans 0.58 to 0.92, so a verdict says whether the interval lies wholly on one
side of the target or holds it ("undecided"). Images of one prompt (other seeds) are not independent
trials: pooled, the interval uses the effective sample size n p (1 - p) / var, var the prompt-clustered
variance of the mean (Kish's design effect), so copies of a run do not narrow it. One run's ``fd_ratio``
interval is ``fd_excess``'s divided by ``fd_real`` (the floor's error is in it; the ratio's denominator is taken
as fixed, its se is 4% of it at N = 60); pooled runs give none.

The targets (``TARGETS``) are checked at the best weight, the one with the highest alignment,
and "alignment at w = 5 at least that at w = 1" across weights.
"""
from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from bench import rundir
from bench.metrics.image_cache import ImageCache, code_digest, scene_key
from bench.report.pareto import save_figure
from bench.shapes import detect
from bench.shapes.detect import score
from bench.shapes.scene import Scene

TARGETS = {"colors": 0.90, "counting": 0.80, "positional": 0.60}
FD_RATIO_MAX = 1.5


def per_image(run_dir: Path) -> pd.DataFrame:
    """One row per shapes image: prompt, guidance_weight, category, num_objects, correct, color_correct."""
    man = rundir.read_manifest(run_dir)
    man = man[man["truth"] != ""]
    if man.empty:
        raise ValueError(f"{run_dir}: no shapes images (no ground truth in manifest.csv)")
    cache = ImageCache.load(run_dir)  # verdicts of the metric phase, keyed by image sha256 and scene
    version = code_digest(detect.score)  # the scorer score_run used
    rows = []
    for r in man.itertuples():
        scene = Scene.from_json(r.truth, r.prompt)
        res = cache.verdict(rundir.file_sha256(run_dir / r.path), scene_key(r.prompt, r.truth, version))
        if res is None:
            with Image.open(run_dir / r.path) as im:
                res = score(np.asarray(im.convert("RGB")), scene)
        rows.append({"prompt": r.prompt, "guidance_weight": float(r.guidance_weight), "category": r.category,
                     "num_objects": len(scene.objects), "correct": bool(res["correct"]),
                     "color_correct": bool(res["color_correct"])})
    return pd.DataFrame(rows)


def wilson(p: float, n: float, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a share p over n trials (n may be an effective, non-integer size)."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def effective_n(correct: pd.Series, prompt: pd.Series) -> float:
    """n for the Wilson interval: the number of images when each prompt has one, else n p (1 - p) / var with var
    the prompt-clustered variance of the mean (one prompt's images move together), within [prompts, images]."""
    n, clusters = len(correct), prompt.nunique()
    if clusters == n:
        return float(n)
    p = float(correct.mean())
    by = pd.DataFrame({"c": correct.astype(float), "k": prompt}).groupby("k")["c"].agg(["sum", "size"])
    var = clusters / (clusters - 1) * float(((by["sum"] - p * by["size"]) ** 2).sum()) / n**2 if clusters > 1 else 0.0
    if var == 0:  # no spread between prompts: every prompt at p (n independent trials), or p at 0 or 1 (no telling)
        return float(n) if 0 < p < 1 else float(clusters)
    n_eff = p * (1 - p) / var
    return float(min(max(n_eff, clusters), n))


def _accuracy(img: pd.DataFrame, name: str, col: str = "correct") -> pd.DataFrame:
    """Per guidance weight: ``name`` (the share of True in ``col``) and its Wilson interval; no rows: empty."""
    rows = {}
    for w, g in img.groupby("guidance_weight"):
        p = float(g[col].mean())
        rows[w] = (p, *wilson(p, effective_n(g[col], g["prompt"])))
    return pd.DataFrame.from_dict(rows, orient="index", columns=[name, f"{name}_low", f"{name}_high"])


def _run_metrics(run_dir: Path) -> pd.DataFrame | None:
    metrics = run_dir / rundir.METRICS
    if not metrics.is_file():
        return None
    m = rundir.read_metrics(metrics)
    m = m[m.category == "all"].set_index("guidance_weight")
    cols = [c for c in ("alignment", "fd", "fd_real") if c in m]
    out = m[cols].copy()
    if {"fd", "fd_real"} <= set(out):
        out["fd_ratio"] = out["fd"] / out["fd_real"]
        if {"fd_excess_ci_low", "fd_excess_ci_high"} <= set(m):  # fd_excess's interval holds both errors
            out["fd_ratio_low"] = 1 + m["fd_excess_ci_low"] / m["fd_real"]
            out["fd_ratio_high"] = 1 + m["fd_excess_ci_high"] / m["fd_real"]
    return out


def _same_prompts(runs: list[Path], images: list[pd.DataFrame]) -> None:
    keys = [set(zip(d["prompt"], d["guidance_weight"])) for d in images]
    for run, k in zip(runs[1:], keys[1:]):
        if k != keys[0]:
            raise ValueError(f"{run}: other prompts or guidance weights than {runs[0]}; pooled runs must differ in "
                             "seed only")


def _pooled_metrics(runs: list[Path]) -> pd.DataFrame | None:
    metrics = [_run_metrics(r) for r in runs]
    missing = [str(r) for r, m in zip(runs, metrics) if m is None]
    if missing:
        if len(missing) < len(runs):
            warnings.warn(f"no {rundir.METRICS} in {', '.join(missing)}: alignment and FD left out of the pooled table",
                          stacklevel=3)
        return None
    if len(runs) == 1:
        return metrics[0]
    pooled = pd.concat(metrics).groupby(level=0).mean()
    return pooled.drop(columns=["fd_ratio_low", "fd_ratio_high"], errors="ignore")


def targets_table(run_dirs: Path | list[Path]) -> pd.DataFrame:
    runs = [Path(run_dirs)] if isinstance(run_dirs, (str, Path)) else [Path(r) for r in run_dirs]
    images = [per_image(r) for r in runs]
    _same_prompts(runs, images)
    img = pd.concat(images, ignore_index=True)
    single = img[(img.category == "Colors") & (img.num_objects == 1)]
    parts = [_accuracy(img[img.category == "Colors"], "colors"),
             single.groupby("guidance_weight")["color_correct"].mean().rename("color_single"),
             single.groupby("guidance_weight")["correct"].mean().rename("color_exact_single"),
             _accuracy(img[img.category == "Counting"], "counting"),
             _accuracy(img[img.category == "Positional"], "positional"),
             img.groupby("guidance_weight").size().rename("n_images")]
    out = pd.concat(parts, axis=1)
    metrics = _pooled_metrics(runs)
    if metrics is not None:
        out = out.join(metrics)
    out.index.name = "guidance_weight"
    return out.reset_index()


def best_weight(table: pd.DataFrame) -> tuple[str, pd.Series]:
    """(the column that picks it, the table's row) of the best weight: the highest alignment (without metrics,
    the highest positional accuracy)."""
    key = "alignment" if "alignment" in table else "positional"
    return key, table.loc[table[key].idxmax()]


def verdicts(table: pd.DataFrame) -> list[str]:
    """One line per target, at the weight with the highest alignment."""
    key, best = best_weight(table)
    w = best["guidance_weight"]
    lines = [f"best guidance weight (highest {key}): w = {w:g}"]
    for col, goal in TARGETS.items():
        if col not in best or pd.isna(best[col]):
            continue  # no prompt of that kind in the run
        ok = best[col] >= goal
        lines.append(f"  {col:<13} {best[col]:.3f}  target >= {goal:.2f}  {'met' if ok else 'NOT met'}"
                     f"  (95% interval {best[col + '_low']:.2f}-{best[col + '_high']:.2f}: "
                     f"{_side(best[col + '_low'], best[col + '_high'], goal, higher_is_better=True)})")
    if "fd_ratio" in best:
        ok = best["fd_ratio"] <= FD_RATIO_MAX
        line = f"  fd / fd_real  {best['fd_ratio']:.2f}   target <= {FD_RATIO_MAX:.1f}   {'met' if ok else 'NOT met'}"
        if "fd_ratio_low" in best and pd.notna(best["fd_ratio_low"]):
            side = _side(best["fd_ratio_low"], best["fd_ratio_high"], FD_RATIO_MAX, higher_is_better=False)
            line += f"   (95% interval {best['fd_ratio_low']:.2f}-{best['fd_ratio_high']:.2f}: {side})"
        else:
            line += "   (no interval: runs pooled, or fd_excess has none)"
        lines.append(line)
    by_w = table.set_index("guidance_weight")
    if "alignment" in by_w and {1.0, 5.0} <= set(by_w.index):
        a1, a5 = by_w.loc[1.0, "alignment"], by_w.loc[5.0, "alignment"]
        lines.append(f"  alignment w=5 {a5:.3f} vs w=1 {a1:.3f}  target: at least w=1  {'met' if a5 >= a1 else 'NOT met'}")
    return lines


def printable(table: pd.DataFrame) -> pd.DataFrame:
    """The table with each interval folded into its value's column: "0.800 (0.58-0.92)"."""
    out = table.copy()
    for col in [c for c in table if f"{c}_low" in table and f"{c}_high" in table]:
        out[col] = [("" if pd.isna(v) else f"{v:.3f}" if pd.isna(lo) else f"{v:.3f} ({lo:.2f}-{hi:.2f})")
                    for v, lo, hi in zip(table[col], table[f"{col}_low"], table[f"{col}_high"])]
        out = out.drop(columns=[f"{col}_low", f"{col}_high"])
    return out


def _side(low: float, high: float, goal: float, higher_is_better: bool) -> str:
    """Where an interval lies against a target that ``goal`` itself meets (>= goal, or <= goal)."""
    if low > goal or (higher_is_better and low == goal):
        return "above the target"
    if high < goal or (not higher_is_better and high == goal):
        return "below the target"
    return "undecided"


CATEGORY_COLORS = {"colors": "tab:red", "counting": "tab:blue", "positional": "tab:green"}


def targets_figure(table: pd.DataFrame, png: Path, title: str = "") -> Path:
    """Each target's category accuracy against w with its 95% band and the target as a dashed line; FD / fd_real
    against w with its interval and the 1.5 line; the best w marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    acc, fd = fig.subplots(1, 2)
    w = table["guidance_weight"].to_numpy(float)
    for col, goal in TARGETS.items():
        if col not in table or table[col].isna().all():
            continue
        c = CATEGORY_COLORS[col]
        acc.plot(w, table[col], "o-", color=c, label=f"{col} (target {goal:.2f})")
        acc.fill_between(w, table[f"{col}_low"], table[f"{col}_high"], color=c, alpha=0.15, linewidth=0)
        acc.axhline(goal, color=c, linestyle="--", linewidth=0.8)
    acc.set(xlabel="guidance weight w", ylabel="share of images right (95% interval)", ylim=(0, 1.02),
            title="composition targets")
    acc.legend(fontsize=8, loc="lower left")
    if "fd_ratio" in table:
        r = table["fd_ratio"].to_numpy(float)
        if "fd_ratio_low" in table:
            err = [r - table["fd_ratio_low"].to_numpy(float), table["fd_ratio_high"].to_numpy(float) - r]
            fd.errorbar(w, r, yerr=err, fmt="o-", color="0.2", capsize=3)
        else:
            fd.plot(w, r, "o-", color="0.2")
        fd.axhline(FD_RATIO_MAX, color="0.2", linestyle="--", linewidth=0.8)
    fd.set(xlabel="guidance weight w", ylabel="FD / fd_real", title=f"fidelity (target <= {FD_RATIO_MAX})")
    key, row = best_weight(table)
    best = float(row["guidance_weight"])
    for ax in (acc, fd):
        ax.axvline(best, color="0.6", linewidth=4, alpha=0.3, zorder=0)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title}  (shaded: best w by {key}, {best:g})", fontsize=9)
    fig.tight_layout()
    save_figure(fig, png)
    return png


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    runs = [Path(a) for a in argv]
    for run_dir in runs:
        if not (run_dir / rundir.MANIFEST).is_file():
            print(f"{run_dir}: no {rundir.MANIFEST} (not a run directory)", file=sys.stderr)
            return 2
    run_dir = runs[0]
    table = targets_table(runs)
    rundir.atomic_write_text(table.to_csv(index=False), run_dir / "targets.csv")
    title = run_dir.name if len(runs) == 1 else f"{len(runs)} runs pooled: {', '.join(r.name for r in runs)}"
    targets_figure(table, run_dir / "targets.png", title)
    print(f"{len(runs)} run(s): {', '.join(map(str, runs))}")
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.float_format", "{:.3f}".format):
        print(printable(table).to_string(index=False))
    print("\n".join(verdicts(table)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
