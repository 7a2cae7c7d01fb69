"""Performance benchmark of imagen-bench: writes ``benchmarks/results.json``.

    python -m benchmarks.run            # full: the shipped cascade (32 -> 64 px), conf/ sampler steps; ~30 min on 2 cores
    python -m benchmarks.run --quick    # everything at tiny sizes (16 -> 32 px cascade, 4 steps), a couple of minutes

(``python benchmarks/run.py`` works too.) Every ratio is measured side by side in one process on one
machine; the raw timings behind each ratio are in the JSON next to it (``details``), with the machine
facts. Each measurement is its own module of this package (``benchmarks.mfu``, ``benchmarks.sweep``, ...);
the sampler and guidance settings come from ``conf/``. See benchmarks/README.md for what each number
means and how to read it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # run as `python benchmarks/run.py`: import from the repo root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402

from benchmarks.adapter import measure_adapter  # noqa: E402
from benchmarks.common import (QUICK_METRICS, REPO, Guidance, compose, cpu_seconds, guidance_settings,  # noqa: E402
                               load_cascade, log, machine_facts, offline_env, stage_files)
from benchmarks.features import measure_feature_throughput  # noqa: E402
from benchmarks.mfu import matmul_peak, measure_mfu  # noqa: E402
from benchmarks.op_profile import profile_sampling  # noqa: E402
from benchmarks.peer import measure_peer  # noqa: E402
from benchmarks.ref_cache import measure_ref_cache  # noqa: E402
from benchmarks.sweep import measure_sweep  # noqa: E402

HEADLINE = ("quick", "mfu", "sweep_batching_gain", "speedup_vs_imagen_pytorch", "ref_stats_cache_speedup",
            "feature_extraction_speedup_vs_torchmetrics", "diffusers_adapter_overhead")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of every measurement")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results.json"))
    p.add_argument("--skip-peer", action="store_true", help="leave out the imagen-pytorch comparison")
    return p.parse_args(argv)


def plan(quick: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sizes of every measurement (``settings`` of the JSON), and the config of a run of that model:
    sampler and metric settings as ``bench.run`` uses them (``conf/``); --quick shrinks steps and sizes."""
    q = quick
    model = "imagen_tiny" if q else "imagen_base"
    defaults = compose([f"model={model}"])  # the sampler and guidance settings a run of this model uses
    smp, gd = defaults["sampler"], defaults["guidance"]
    steps = 4 if q else int(smp["steps"])
    size = dict(model=model, micro_batch=int(smp["micro_batch"]), steps=steps,
                sr_steps=3 if q else int(smp["sr_steps"] or smp["steps"]), sr_weight=gd["sr_weight"],
                repeats=2 if q else 3, matmul_n=512 if q else 2048, sweep_prompts=6 if q else 12, peer_images=8,
                peer_steps=steps, feat_n=64 if q else 1024, profile_steps=2 if q else 5)
    return size, defaults


def measure_sampling(results: dict[str, Any], work: Path, size: dict[str, Any], guide: Guidance, kind: str,
                     threads: int, skip_peer: bool) -> dict[str, Any]:
    """MFU, the sweep and the peer comparison into ``results``; their details, and the cascade, returned."""
    q = results["quick"]
    ckpt, results["weights"] = stage_files(size["model"], work / "ckpt")
    log(f"matmul peak ({size['matmul_n']}^3, {threads} threads)")
    peak = matmul_peak(size["matmul_n"], 5 if q else 10)
    cascade = load_cascade(size["model"], ckpt)
    log("MFU while sampling")
    mfu = measure_mfu(cascade, size["micro_batch"], size["steps"], size["sr_steps"], size["sr_weight"], peak,
                      size["repeats"], w=guide.w, kind=kind, thresholding=guide.thresholding,
                      percentile=guide.percentile)
    results["mfu"] = {k: v["mfu"] for k, v in mfu.items()}
    log("sweep batching")
    sweep = measure_sweep(size["model"], ckpt, work / "sweep", size["sweep_prompts"], size["steps"],
                          size["sr_steps"], size["micro_batch"], threads, guide.weights,
                          metrics_overrides=tuple(f"metrics.{k}={v}" for k, v in QUICK_METRICS.items()) if q else ())
    results["sweep_batching_gain"] = sweep["gain"]
    peer: dict[str, Any] = {"skipped": "--skip-peer"}
    if not skip_peer:
        log("imagen-pytorch")
        try:
            peer = measure_peer(cascade, size["peer_images"], size["peer_steps"], guide.w, guide.percentile,
                                size["sr_weight"], size["sr_steps"], size["repeats"], rounds=1 if q else 2)
        except ImportError as e:
            peer = {"skipped": str(e)}
    results["speedup_vs_imagen_pytorch"] = peer.get("speedup")
    return {"cascade": cascade, "matmul_peak": peak, "mfu": mfu, "sweep": sweep, "imagen_pytorch": peer}


def measure_all(results: dict[str, Any], work: Path, size: dict[str, Any], defaults: dict[str, Any], threads: int,
                skip_peer: bool) -> None:
    """Every measurement, in the order of the JSON, into ``results`` (headline keys and ``details``)."""
    guide = guidance_settings()
    kind = str(defaults["sampler"]["kind"])
    details = measure_sampling(results, work, size, guide, kind, threads, skip_peer)
    cascade = details.pop("cascade")
    log("metrics: reference-stats cache")
    ref = measure_ref_cache(work / "sweep" / "sweep", work / "metrics", results["quick"])
    results["ref_stats_cache_speedup"] = ref["speedup"]
    log("metrics: feature extraction vs torchmetrics")
    feats = measure_feature_throughput(cascade.image_size, size["feat_n"], int(defaults["metrics"]["batch_size"]),
                                       size["repeats"])
    results["feature_extraction_speedup_vs_torchmetrics"] = feats["speedup"]
    log("diffusers adapter vs direct pipeline calls")
    adapter = measure_adapter(work / "adapter", rounds=2 if results["quick"] else 4)
    results["diffusers_adapter_overhead"] = adapter["overhead"]
    log("profile")
    results["profile_top_ops"] = profile_sampling(cascade, size["micro_batch"], size["profile_steps"],
                                                  size["sr_weight"], w=guide.w, kind=kind,
                                                  thresholding=guide.thresholding, percentile=guide.percentile)
    results["details"] = {**details, "ref_stats_cache": ref, "feature_extraction": feats, "diffusers_adapter": adapter}


def write_results(results: dict[str, Any], out: Path, wall: float, cpu_s: float, threads: int) -> None:
    machine = results["machine"]
    machine["loadavg_end"] = list(os.getloadavg())
    machine["benchmark_wall_s"] = wall
    machine["benchmark_cpu_s"] = cpu_s
    machine["cpu_share"] = cpu_s / (wall * threads)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(json.dumps({k: results.get(k) for k in HEADLINE}, indent=2, default=float))
    log(f"wrote {out} in {wall:.0f} s")


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    offline_env()
    if a.threads:
        torch.set_num_threads(a.threads)
    threads = torch.get_num_threads()
    size, defaults = plan(a.quick)
    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    work = Path(tempfile.mkdtemp(prefix="imagen-bench-benchmark-"))
    os.environ["IMAGEN_BENCH_CACHE"] = str(work / "cache")  # fresh caches: nothing reused from earlier runs
    results: dict[str, Any] = {"quick": a.quick, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "settings": size}
    try:
        results["machine"] = machine_facts()
        measure_all(results, work, size, defaults, threads, a.skip_peer)
    except BaseException:
        log(f"failed; work files kept in {work}")
        raise
    shutil.rmtree(work, ignore_errors=True)
    write_results(results, Path(a.out), time.perf_counter() - wall0, cpu_seconds() - cpu0, threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
