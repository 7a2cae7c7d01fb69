"""Profile of the metric phase: ``score_run`` on a run directory, first with nothing cached, then again
with the reference and image caches filled (a repeat run) under cProfile, then once more with only the
reference cache (the run's ``image_metrics.safetensors`` removed).

    python -m benchmarks.profile_metrics RUN_DIR [--top 15] [--out benchmarks/profile_metrics.json]
    python benchmarks/profile_metrics.py RUN_DIR ...   # the same

Prints both wall times and the functions with the most cumulative time in the repeat; with
``--out`` writes them as JSON. The run directory is copied first (score_run writes metrics.csv
into it). Used for the before/after table of the metric phase in the README.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as `python benchmarks/profile_metrics.py`: import from the repo root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import pandas as pd  # noqa: E402

from bench.metrics.image_cache import FILE as IMAGE_CACHE  # noqa: E402
from bench.metrics.score_run import MetricsConfig, score_run  # noqa: E402
from benchmarks.common import REPO, offline_env  # noqa: E402


def top_functions(prof: cProfile.Profile, top: int) -> list[dict]:
    stats = pstats.Stats(prof)
    rows = []
    for (path, line, name), (_, ncalls, _tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        if path.startswith(str(REPO)) and "site-packages" not in path:  # the project's own functions
            rows.append({"function": f"{Path(path).relative_to(REPO)}:{line}({name})", "calls": ncalls,
                         "cumulative_s": round(cumtime, 3)})
    return sorted(rows, key=lambda r: -r["cumulative_s"])[:top]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    offline_env()
    work = Path(tempfile.mkdtemp(prefix="imagen-bench-profile-"))
    try:
        run = work / "run"
        shutil.copytree(a.run_dir, run, ignore=shutil.ignore_patterns("metrics.*", "image_metrics.*", "image_scores.*"))
        cfg = MetricsConfig(cache_dir=str(work / "refcache"), device="cpu")
        t0 = time.perf_counter()
        score_run(run, cfg)
        first = time.perf_counter() - t0
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        score_run(run, cfg)
        prof.disable()
        repeat = time.perf_counter() - t0
        (run / IMAGE_CACHE).unlink()
        t0 = time.perf_counter()
        score_run(run, cfg)
        ref_only = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    images = len(pd.read_csv(a.run_dir / "manifest.csv"))
    result = {"run_dir": str(a.run_dir), "images": images, "first_s": first, "repeat_s": repeat,
              "repeat_speedup": first / repeat, "repeat_ref_cache_only_s": ref_only,
              "repeat_top_functions": top_functions(prof, a.top)}
    print(f"{images} images: first {first:.2f} s (nothing cached), repeat {repeat:.2f} s (reference and image "
          f"caches): {first / repeat:.1f}x; repeat with the reference cache only {ref_only:.2f} s")
    for r in result["repeat_top_functions"]:
        print(f"  {r['cumulative_s']:8.3f} s  {r['calls']:6d}  {r['function']}")
    if a.out:
        a.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
