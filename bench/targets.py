"""The shipped cascade's quality targets on shapes, measured on a finished run directory.

    python -m bench.targets RUN_DIR      # prints the table, writes RUN_DIR/targets.csv

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

The targets (``TARGETS``) are checked at the best weight, the one with the highest alignment,
and "alignment at w = 5 at least that at w = 1" across weights.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from PIL import Image

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


def targets_table(run_dir: Path) -> pd.DataFrame:
    img = per_image(run_dir)
    single = img[(img.category == "Colors") & (img.num_objects == 1)]
    out = pd.DataFrame({
        "colors": img[img.category == "Colors"].groupby("guidance_weight")["correct"].mean(),
        "color_single": single.groupby("guidance_weight")["color_correct"].mean(),
        "color_exact_single": single.groupby("guidance_weight")["correct"].mean(),
        "counting": img[img.category == "Counting"].groupby("guidance_weight")["correct"].mean(),
        "positional": img[img.category == "Positional"].groupby("guidance_weight")["correct"].mean(),
        "n_images": img.groupby("guidance_weight").size(),
    })
    metrics = run_dir / rundir.METRICS
    if metrics.is_file():
        m = rundir.read_metrics(metrics)
        m = m[m.category == "all"].set_index("guidance_weight")
        for col in ("alignment", "fd", "fd_real"):
            if col in m:
                out[col] = m[col]
        if {"fd", "fd_real"} <= set(out):
            out["fd_ratio"] = out["fd"] / out["fd_real"]
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
        lines.append(f"  {col:<13} {best[col]:.3f}  target >= {goal:.2f}  {'met' if ok else 'NOT met'}")
    if "fd_ratio" in best:
        ok = best["fd_ratio"] <= FD_RATIO_MAX
        lines.append(f"  fd / fd_real  {best['fd_ratio']:.2f}   target <= {FD_RATIO_MAX:.1f}   {'met' if ok else 'NOT met'}")
    by_w = table.set_index("guidance_weight")
    if "alignment" in by_w and {1.0, 5.0} <= set(by_w.index):
        a1, a5 = by_w.loc[1.0, "alignment"], by_w.loc[5.0, "alignment"]
        lines.append(f"  alignment w=5 {a5:.3f} vs w=1 {a1:.3f}  target: at least w=1  {'met' if a5 >= a1 else 'NOT met'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    run_dir = Path(argv[0])
    if not (run_dir / rundir.MANIFEST).is_file():
        print(f"{run_dir}: no {rundir.MANIFEST} (not a run directory)", file=sys.stderr)
        return 2
    table = targets_table(run_dir)
    rundir.atomic_write_text(table.to_csv(index=False), run_dir / "targets.csv")
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.3f}".format):
        print(table.to_string(index=False))
    print("\n".join(verdicts(table)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
