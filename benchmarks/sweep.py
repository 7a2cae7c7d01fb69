"""What a guidance-weight sweep saves (``sweep_batching_gain`` of results.json): one run over the K weights
of ``conf/guidance/sweep.yaml`` against K single-weight runs, same prompts, steps and seeds; as
``python -m bench.run`` processes (the headline) and inside one process (details)."""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from bench.metrics.score_run import MetricsConfig, score_run
from bench.run import run
from benchmarks.common import REPO, compose, log


def digests(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((run_dir / "images").rglob("*.png"))}


def chunk_counts(n_prompts: int, weights: tuple[float, ...], micro_batch: int) -> dict[str, int]:
    """Micro-batches and forward rows (cond + uncond) the sampler computes for one run."""
    w1 = sum(1 for w in weights if w == 1.0) * n_prompts
    guided = (len(weights) - (1 if 1.0 in weights else 0)) * n_prompts
    c1, cg = math.ceil(w1 / micro_batch), math.ceil(guided / micro_batch)
    return {"micro_batches": c1 + cg, "forward_rows": micro_batch * (c1 + 2 * cg),
            "needed_rows": w1 + 2 * guided}


def run_overrides(model_name: str, ckpt: dict[str, Path], text_cache: Path, n_prompts: int,
                  weights: tuple[float, ...], steps: int, sr_steps: int, micro_batch: int, threads: int,
                  metrics: bool) -> list[str]:
    """The ``bench.run`` overrides of one benchmark run (CLI arguments, or ``compose`` in process); float32, as
    everything the benchmark times (model.dtype=auto would pick bf16 on some CPUs: benchmarks/bf16.py)."""
    return [f"model={model_name}", "model.dtype=float32", f"model.stages.0.checkpoint={ckpt['base']}",
            f"model.stages.1.checkpoint={ckpt['sr']}", f"model.text_encoder.cache_dir={text_cache}",
            f"prompts.n={n_prompts}", f"guidance.weights=[{','.join(f'{w:g}' for w in weights)}]",
            f"sampler.steps={steps}", f"sampler.sr_steps={sr_steps}", f"sampler.micro_batch={micro_batch}",
            "device=cpu", f"threads={threads}"] + ([] if metrics else ["metrics=none"])


@dataclass(frozen=True)
class SweepSpec:
    """The runs being compared: model and checkpoints, prompts, steps, micro-batch, threads, the sweep's weights."""

    model_name: str
    ckpt: dict[str, Path]
    n_prompts: int
    steps: int
    sr_steps: int
    micro_batch: int
    threads: int
    weights: tuple[float, ...]

    def overrides(self, text_cache: Path, weights: tuple[float, ...], metrics: bool, n: int | None = None
                  ) -> list[str]:
        return run_overrides(self.model_name, self.ckpt, text_cache, self.n_prompts if n is None else n, weights,
                             self.steps, self.sr_steps, self.micro_batch, self.threads, metrics=metrics)


def cli_run(overrides: list[str], run_dir: Path, log_file: Path) -> dict[str, Any]:
    """Wall seconds of one ``python -m bench.run`` process (interpreter start to exit), with the run's
    own per-phase wall times (``run_info.json``)."""
    t0 = time.perf_counter()
    with open(log_file, "w") as out:
        subprocess.run([sys.executable, "-m", "bench.run", *overrides, f"hydra.run.dir={run_dir}"], cwd=REPO,
                       check=True, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    phases = json.loads((run_dir / "run_info.json").read_text()).get("wall_time_s", {})
    return {"seconds": seconds, "phases_s": phases}


def metrics_rows_match(sweep_dir: Path, single_dirs: dict[float, Path]) -> bool:
    """Every row of each single-weight run's metrics.csv equals the sweep run's row for that weight."""
    sweep = pd.read_csv(sweep_dir / "metrics.csv")
    for w, d in single_dirs.items():
        one = pd.read_csv(d / "metrics.csv").reset_index(drop=True)
        part = sweep[sweep["guidance_weight"] == w].reset_index(drop=True)
        try:
            pd.testing.assert_frame_equal(one, part)
        except AssertionError as e:
            log(f"WARNING: metrics of the w={w:g} run differ from the sweep's rows: {e}")
            return False
    return True


def in_process_runs(spec: SweepSpec, work: Path) -> dict[str, Any]:
    """Wall times of the sweep run and of the K single-weight runs in this process, metrics off."""
    def cfg(weights: tuple[float, ...], text_cache: Path, n: int | None = None) -> dict:
        return compose(spec.overrides(text_cache, weights, metrics=False, n=n))

    # warm-up (not timed): first-call costs (imports of the report, kernel set-up for both micro-batch shapes)
    run(cfg((1.0, 2.0), work / "text-warmup", n=1), work / "warmup")
    t0 = time.perf_counter()
    info = run(cfg(spec.weights, work / "text-sweep"), work / "sweep")["info"]
    sweep_s = time.perf_counter() - t0
    singles = []
    for w in spec.weights:
        t0 = time.perf_counter()
        one = run(cfg((w,), work / "text-single"), work / f"single-w{w:g}")["info"]
        singles.append({"weight": w, "seconds": time.perf_counter() - t0,
                        "generation_s": one["wall_time_s"]["generation"]})
    singles_s = sum(s["seconds"] for s in singles)
    return {
        "gain_in_process": singles_s / sweep_s,
        "gain_generation_only": sum(s["generation_s"] for s in singles) / info["wall_time_s"]["generation"],
        "sweep_seconds": sweep_s, "sweep_generation_s": info["wall_time_s"]["generation"],
        "single_runs": singles, "singles_seconds": singles_s}


def compare_images(work: Path, weights: tuple[float, ...]) -> dict[str, Any]:
    """Whether the sweep's images equal the single-weight runs' byte for byte (and if not, by how much)."""
    merged: dict[str, str] = {}
    for w in weights:
        merged.update(digests(work / f"single-w{w:g}"))
    swept = digests(work / "sweep")
    differ = sorted(k for k in swept if merged.get(k) != swept[k])
    identical = not differ and merged.keys() == swept.keys()
    max_pixel_diff = 0
    if not identical:  # recorded loudly, not fatal: the timings stay valid
        log(f"WARNING: sweep and single-weight runs differ for {len(differ)} of {len(swept)} images: {differ[:4]}")
        for k in differ:
            single = work / f"single-{k.split('/')[1]}" / k
            if single.is_file():
                a = np.asarray(Image.open(work / "sweep" / k), dtype=np.int16)
                b = np.asarray(Image.open(single), dtype=np.int16)
                max_pixel_diff = max(max_pixel_diff, int(np.abs(a - b).max()))
    return {"images_byte_identical": identical, "images_differing": differ, "max_pixel_diff": max_pixel_diff,
            "num_images": len(merged)}


def cli_comparison(spec: SweepSpec, work: Path, metrics_overrides: tuple[str, ...], cli_repeats: int
                   ) -> dict[str, Any]:
    """One sweep process vs K single-weight ``python -m bench.run`` processes with the default metrics,
    ``cli_repeats`` alternating rounds, each side's time its minimum over the rounds (per weight for the singles)."""
    # reference statistics and everything derived from them (real-image baselines at these row sizes)
    # computed before either side is timed, into the cache both use
    text_cache = work / "text-cli"
    shutil.copytree(work / "text-sweep", text_cache)  # prompt embeddings already cached, for both sides alike

    def args(weights: tuple[float, ...]) -> list[str]:
        return spec.overrides(text_cache, weights, metrics=True) + list(metrics_overrides)

    score_run(work / "sweep", MetricsConfig.from_dict(compose(args(spec.weights))["metrics"]))
    sweep_runs: list[dict[str, Any]] = []
    single_runs: dict[float, list[dict[str, Any]]] = {w: [] for w in spec.weights}
    for r in range(cli_repeats):  # alternating sides, each in a fresh run directory
        sweep_runs.append(cli_run(args(spec.weights), work / f"cli{r}-sweep", work / f"cli{r}-sweep.log"))
        for w in spec.weights:
            single_runs[w].append(cli_run(args((w,)), work / f"cli{r}-single-w{w:g}", work / f"cli{r}-single-w{w:g}.log"))
    sweep_best = min(x["seconds"] for x in sweep_runs)
    singles_best = sum(min(x["seconds"] for x in runs) for runs in single_runs.values())
    return {
        "gain": singles_best / sweep_best,
        "cli_repeats": cli_repeats,
        "cli_sweep_seconds": sweep_best, "cli_singles_seconds": singles_best,
        "cli_sweep_runs": sweep_runs,
        "cli_single_runs": {f"{w:g}": runs for w, runs in single_runs.items()},
        "cli_metrics_rows_identical": metrics_rows_match(work / "cli0-sweep",
                                                         {w: work / f"cli0-single-w{w:g}" for w in spec.weights}),
        "cli_images_byte_identical": digests(work / "cli0-sweep") == digests(work / "sweep"),
    }


def measure_sweep(model_name: str, ckpt: dict[str, Path], work: Path, n_prompts: int, steps: int, sr_steps: int,
                  micro_batch: int, threads: int, weights: tuple[float, ...], cli: bool = True,
                  metrics_overrides: tuple[str, ...] = (), cli_repeats: int = 2) -> dict[str, Any]:
    """One run over the K ``weights`` vs K single-weight runs (same prompts, steps, seeds).

    Headline (``gain``): wall clock of ``python -m bench.run`` processes with the default metrics, as
    a user runs them: one sweep process vs K single-weight processes, against reference statistics
    cached beforehand (neither side computes them); ``cli_repeats`` alternating rounds, each side's
    time its minimum over the rounds (per weight for the singles). Details: the same comparison inside one
    process with metrics off (``gain_in_process``: cascade load, text encoding, generation, manifest,
    report), and generation alone (``gain_generation_only``: micro-batch packing).
    """
    spec = SweepSpec(model_name, ckpt, n_prompts, steps, sr_steps, micro_batch, threads, tuple(weights))
    in_process = in_process_runs(spec, work)
    sweep_chunks = chunk_counts(n_prompts, spec.weights, micro_batch)
    single_chunks = [chunk_counts(n_prompts, (w,), micro_batch) for w in spec.weights]
    out: dict[str, Any] = {
        "gain": None, **in_process, **compare_images(work, spec.weights), "weights": list(spec.weights),
        "prompts": n_prompts, "steps": steps, "sr_steps": sr_steps, "micro_batch": micro_batch,
        "sweep_micro_batches": sweep_chunks,
        "singles_micro_batches": {k: sum(c[k] for c in single_chunks) for k in sweep_chunks},
    }
    if not cli:
        out["gain"] = out["gain_in_process"]
        return out
    out.update(cli_comparison(spec, work, metrics_overrides, cli_repeats))
    return out
