"""The shipped cascade's quality targets on shapes, measured on a finished run directory.

    python -m bench.targets RUN_DIR [RUN_DIR ...]   # prints the table, writes RUN_DIR/targets.csv

Several run directories (the same prompts at other seeds) are pooled: every accuracy counts the images of
all of them, ``fd_ratio`` is the mean of the runs' ratios, and ``targets.csv`` is written into the first.

Per guidance weight, from the exact scorer (``bench.shapes.detect.score``) on every image of
the run (its verdicts read from the metric phase's ``image_metrics.safetensors`` where the image
and scene are unchanged) and from the run's ``metrics.csv``:

- ``colors``: the DrawBench-style Colors category (one or two objects, each colour bound to its
  shape), exact detector;
- ``color_single``: colour accuracy on single-object Colors prompts (the requested colour is
  present); ``color_exact_single``: the object has the right colour *and* shape, nothing extra;
- ``counting``: Counting prompts with exactly the requested number of objects of that kind;
- ``positional``: Positional prompts with both objects found and the relation holding;
- ``alignment``: the run's ``alignment`` (all categories), ``fd`` and ``fd_real`` (two
  independent real sets of the same size) with ``fd_ratio = fd / fd_real``.

Each accuracy has a 95% Wilson score interval (``<column>_low`` / ``_high``) over its images: at 20 prompts
a category's accuracy of 0.80 spans 0.58 to 0.92, so a verdict says whether the interval lies wholly on one
side of the target or holds it ("undecided").

The targets (``TARGETS``) are checked at the best weight, the one with the highest alignment,
and "alignment at w = 5 at least that at w = 1" across weights.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.stats import binomtest

from bench import rundir
from bench.metrics.image_cache import ImageCache, code_digest, scene_key
from bench.shapes import detect
from bench.shapes.detect import score
from bench.shapes.scene import Scene

TARGETS = {"colors": 0.90, "counting": 0.80, "positional": 0.60}
FD_RATIO_MAX = 1.5


def per_image(run_dir: Path) -> pd.DataFrame:
    """One row per shapes image: guidance_weight, category, num_objects, correct, color_correct."""
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
        rows.append({"guidance_weight": float(r.guidance_weight), "category": r.category,
                     "num_objects": len(scene.objects), "correct": bool(res["correct"]),
                     "color_correct": bool(res["color_correct"])})
    return pd.DataFrame(rows)


def wilson(correct: pd.Series) -> tuple[float, float]:
    """95% Wilson score interval of the share of True in ``correct``."""
    ci = binomtest(int(correct.sum()), len(correct)).proportion_ci(0.95, method="wilson")
    return float(ci.low), float(ci.high)


def _accuracy(img: pd.DataFrame, name: str, col: str = "correct") -> pd.DataFrame:
    """Per guidance weight: ``name`` (the share of True in ``col``) and its Wilson interval."""
    g = img.groupby("guidance_weight")[col]
    ci = g.apply(wilson)
    return pd.DataFrame({name: g.mean(), f"{name}_low": ci.str[0], f"{name}_high": ci.str[1]})


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


def targets_table(run_dirs: Path | list[Path]) -> pd.DataFrame:
    runs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    img = pd.concat([per_image(Path(r)) for r in runs], ignore_index=True)
    single = img[(img.category == "Colors") & (img.num_objects == 1)]
    parts = [_accuracy(img[img.category == "Colors"], "colors"),
             single.groupby("guidance_weight")["color_correct"].mean().rename("color_single"),
             single.groupby("guidance_weight")["correct"].mean().rename("color_exact_single"),
             _accuracy(img[img.category == "Counting"], "counting"),
             _accuracy(img[img.category == "Positional"], "positional"),
             img.groupby("guidance_weight").size().rename("n_images")]
    out = pd.concat(parts, axis=1)
    metrics = [m for m in (_run_metrics(Path(r)) for r in runs) if m is not None]
    if len(metrics) == len(runs):  # run means; a ratio's interval only for one run
        pooled = pd.concat(metrics).groupby(level=0).mean()
        out = out.join(pooled if len(runs) == 1 else pooled.drop(columns=["fd_ratio_low", "fd_ratio_high"],
                                                                   errors="ignore"))
    out.index.name = "guidance_weight"
    return out.reset_index()


def verdicts(table: pd.DataFrame) -> list[str]:
    """One line per target, at the weight with the highest alignment."""
    key = "alignment" if "alignment" in table else "positional"
    best = table.loc[table[key].idxmax()]
    w = best["guidance_weight"]
    lines = [f"best guidance weight (highest {key}): w = {w:g}"]
    for col, goal in TARGETS.items():
        if col not in best or pd.isna(best[col]):
            continue  # no prompt of that kind in the run
        ok = best[col] >= goal
        lines.append(f"  {col:<13} {best[col]:.3f}  target >= {goal:.2f}  {'met' if ok else 'NOT met'}"
                     f"  (95% interval {best[col + '_low']:.2f}-{best[col + '_high']:.2f}: {_side(best, col, goal)})")
    if "fd_ratio" in best:
        ok = best["fd_ratio"] <= FD_RATIO_MAX
        line = f"  fd / fd_real  {best['fd_ratio']:.2f}   target <= {FD_RATIO_MAX:.1f}   {'met' if ok else 'NOT met'}"
        if "fd_ratio_low" in best and pd.notna(best["fd_ratio_low"]):
            side = ("below the target" if best["fd_ratio_high"] <= FD_RATIO_MAX else
                    "above the target" if best["fd_ratio_low"] > FD_RATIO_MAX else "undecided")
            line += f"   (95% interval {best['fd_ratio_low']:.2f}-{best['fd_ratio_high']:.2f}: {side})"
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
        out[col] = [f"{v:.3f} ({lo:.2f}-{hi:.2f})" if pd.notna(v) else "" for v, lo, hi in
                    zip(table[col], table[f"{col}_low"], table[f"{col}_high"])]
        out = out.drop(columns=[f"{col}_low", f"{col}_high"])
    return out


def _side(row: pd.Series, col: str, goal: float) -> str:
    if row[f"{col}_low"] >= goal:
        return "above the target"
    if row[f"{col}_high"] < goal:
        return "below the target"
    return "undecided"


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
    print(f"{len(runs)} run(s): {', '.join(map(str, runs))}")
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.float_format", "{:.3f}".format):
        print(printable(table).to_string(index=False))
    print("\n".join(verdicts(table)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
