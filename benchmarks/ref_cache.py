"""The metric phase of a repeat run (``ref_stats_cache_speedup`` of results.json): ``score_run`` on one run
directory with nothing cached, over the same call with the reference and image caches filled."""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from bench.metrics import refstats as rs
from bench.metrics import score_run as sr
from bench.metrics.image_cache import FILE
from benchmarks.common import QUICK_METRICS


@contextmanager
def timing_wrapper(module: Any, name: str, sink: list[float]) -> Iterator[None]:
    """Replaces ``module.name`` by a wrapper appending each call's wall seconds to ``sink``, for the block."""
    real = getattr(module, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            sink.append(time.perf_counter() - t0)

    setattr(module, name, wrapped)
    try:
        yield
    finally:
        setattr(module, name, real)


def timed_score(run_dir: Path, cfg: sr.MetricsConfig) -> tuple[pd.DataFrame, float, dict[str, float]]:
    """One ``score_run``: (table, wall seconds, seconds in the reference statistics and the FD real baseline)."""
    ref_s: list[float] = []
    real_s: list[float] = []
    with timing_wrapper(rs, "load_or_compute", ref_s), timing_wrapper(sr, "shapes_real_features", real_s):
        t0 = time.perf_counter()
        table = sr.score_run(run_dir, cfg)
        seconds = time.perf_counter() - t0
    return table, seconds, {"reference_stats_s": sum(ref_s), "fd_real_baseline_s": sum(real_s)}


def measure_ref_cache(run_dir: Path, work: Path, quick: bool, repeats: int = 2) -> dict[str, Any]:
    """``score_run`` on one run, three ways, ``repeats`` times each with a fresh reference cache:

    - ``first``: nothing cached (no reference stats, no ``RUN/image_metrics.safetensors``);
    - ``second``: a repeat run, both caches filled (the headline ``speedup`` = first / second);
    - ``ref_only``: the reference cache filled but the run's image cache removed (what the images'
      own embedding and checking cost on top).

    Each time is the minimum over the repeats (the least-disturbed measurement on a shared machine);
    every table must be identical."""
    times: dict[str, list[float]] = {"first": [], "second": [], "ref_only": []}
    parts: dict[str, list[dict]] = {k: [] for k in times}
    tables = []
    for r in range(repeats):
        kw: dict[str, Any] = dict(cache_dir=str(work / f"refcache{r}"), device="cpu")
        if quick:
            kw.update(QUICK_METRICS)
        cfg = sr.MetricsConfig(**kw)
        for side in times:
            if side != "second":
                (run_dir / FILE).unlink(missing_ok=True)
            table, seconds, part = timed_score(run_dir, cfg)
            tables.append(table)
            times[side].append(seconds)
            parts[side].append(part)
    for t in tables[1:]:
        pd.testing.assert_frame_equal(tables[0], t)
    best = {k: min(v) for k, v in times.items()}
    ref_first = min(p["reference_stats_s"] for p in parts["first"])
    ref_second = min(p["reference_stats_s"] for p in parts["second"])
    return {"speedup": best["first"] / best["second"], "first_s": times["first"], "second_s": times["second"],
            "ref_cache_only_s": times["ref_only"], "ref_cache_only_speedup": best["first"] / best["ref_only"],
            "first_breakdown": parts["first"], "second_breakdown": parts["second"],
            "reference_stats_phase_speedup": ref_first / max(ref_second, 1e-9),
            "ref_n": cfg.ref_n, "num_images": int(tables[0].loc[tables[0]["category"] == "all", "num_images"].sum()),
            "tables_identical": True}
