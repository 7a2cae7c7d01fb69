"""Model-FLOPs utilisation of each cascade stage while sampling (``mfu`` of results.json): FLOPs of one
forward at the sampler's micro-batch shape, times forwards per second while ``Cascade.sample`` runs, over
the best fp32 throughput this CPU reaches in the same run: the largest of a square torch.mm at several sizes
and of every convolution shape the stages run, timed alone as F.conv2d in channels-last at the micro-batch
shape. The theoretical FMA peak (from /proc/cpuinfo) is reported beside it; an MFU above 1 is clamped to 1
with a warning (``mfu_unclamped`` keeps the raw ratio).

    python -m benchmarks.mfu [--threads 2] [--quick]   # the peak's components only: GEMMs, convolutions, FMA peak
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # run as `python benchmarks/mfu.py`: import from the repo root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count  # noqa: E402

from benchmarks.common import (compose, cpu_features, cpuinfo_field, guidance_settings, load_cascade, log,  # noqa: E402
                               median, offline_env, sampling_inputs, stage_files, stage_forward_args, timed)
from imagen.cascade import Cascade  # noqa: E402

GEMM_SIZES = (512, 1024, 2048, 4096)
FMA_UNITS = 2  # assumed FMA pipes per core (Intel since Haswell, AMD since Zen 2); not readable from the OS


def gemm_throughput(n: int, repeats: int) -> dict[str, Any]:
    a, b = torch.randn(n, n), torch.randn(n, n)
    times = timed(lambda: torch.mm(a, b), repeats, warmup=2)
    flops = 2.0 * n ** 3
    return {"n": n, "flops": flops, "seconds": times, "gflops_best": flops / min(times) / 1e9,
            "gflops_median": flops / median(times) / 1e9}


def matmul_peak(n: int, repeats: int) -> dict[str, Any]:
    """fp32 square torch.mm at the current thread count, at each of ``GEMM_SIZES`` up to 2n (4096 with fewer
    repeats): the best size's numbers at the top level, every size under ``by_size``."""
    sizes = [s for s in GEMM_SIZES if s <= 2 * n] or [n]
    by_size = [gemm_throughput(s, repeats if s <= 2048 else max(3, repeats // 3)) for s in sizes]
    best = max(by_size, key=lambda r: r["gflops_best"])
    return {**best, "by_size": [{k: r[k] for k in ("n", "gflops_best", "gflops_median")} for r in by_size]}


def conv_shapes(model: torch.nn.Module, args: tuple, kwargs: dict) -> list[dict[str, Any]]:
    """Every distinct Conv2d call of one forward (input and weight shapes, stride, padding, ...), with its count."""
    seen: dict[tuple, dict[str, Any]] = {}

    def hook(m: torch.nn.Conv2d, inputs: tuple, _out: torch.Tensor) -> None:
        c = {"input": list(inputs[0].shape), "weight": list(m.weight.shape), "stride": list(m.stride),
             "padding": list(m.padding), "dilation": list(m.dilation), "groups": m.groups, "bias": m.bias is not None}
        key = json.dumps(c)
        seen.setdefault(key, {**c, "calls": 0})["calls"] += 1

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.inference_mode():
            model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return list(seen.values())


def conv_throughput(c: dict[str, Any], repeats: int) -> dict[str, Any]:
    """One convolution shape alone: F.conv2d on channels-last input and weight, as the sampler runs it."""
    x = torch.randn(c["input"]).contiguous(memory_format=torch.channels_last)
    w = torch.randn(c["weight"]).contiguous(memory_format=torch.channels_last)
    b = torch.randn(c["weight"][0]) if c["bias"] else None
    with torch.inference_mode():
        def fn() -> torch.Tensor:
            return F.conv2d(x, w, b, c["stride"], c["padding"], c["dilation"], c["groups"])
        out = fn()
        times = timed(fn, repeats, warmup=2)
    flops = 2.0 * x.shape[0] * math.prod(c["weight"]) * out.shape[2] * out.shape[3]  # FlopCounterMode's formula
    return {**c, "flops": flops, "gflops_best": flops / min(times) / 1e9, "gflops_median": flops / median(times) / 1e9}


def clock_mhz(cpuinfo: str | None = None) -> tuple[float | None, str]:
    """The highest clock the OS states: cpufreq's cpuinfo_max_freq (what lscpu calls max MHz), else the largest
    'cpu MHz' of /proc/cpuinfo (the current clock; on VMs usually the nominal one)."""
    path = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if cpuinfo is None and path.is_file():
        return int(path.read_text()) / 1000, str(path)
    mhz = [float(v) for v in cpuinfo_field("cpu MHz", cpuinfo)]
    return (max(mhz), "/proc/cpuinfo cpu MHz") if mhz else (None, "unknown")


def theoretical_peak(threads: int, cpuinfo: str | None = None) -> dict[str, Any]:
    """fp32 FMA peak: cores x SIMD lanes (16 with avx512f, 8 with avx2, else 4) x FMA_UNITS x 2 flops x clock.
    Cores: the threads, at most the physical cores (hyper-threads share their core's FMA units)."""
    feats = cpu_features(cpuinfo)
    lanes = 16 if feats["avx512f"] else 8 if feats["avx2"] else 4
    per_cycle = lanes * FMA_UNITS * (2 if feats["fma"] or feats["avx512f"] else 1)
    pairs = set(zip(cpuinfo_field("physical id", cpuinfo), cpuinfo_field("core id", cpuinfo)))
    cores = min(threads, len(pairs)) if pairs else threads
    mhz, source = clock_mhz(cpuinfo)
    return {"gflops": cores * per_cycle * mhz / 1000 if mhz else None, "cores": cores, "simd_lanes_fp32": lanes,
            "fma_units_assumed": FMA_UNITS, "flops_per_cycle_per_core": per_cycle, "mhz": mhz, "clock_source": source,
            "assumptions": f"{FMA_UNITS} FMA units per core (not readable from the OS); the stated clock held under "
                           "load on every core (turbo can exceed it, AVX-512 licences lower it); one thread per core"}


def cpu_peak(gemm: dict[str, Any], convs: list[dict[str, Any]], theoretical: dict[str, Any]) -> dict[str, Any]:
    """The MFU denominator: the best measured fp32 throughput, GEMM or one of the model's convolution shapes."""
    conv = max(convs, key=lambda c: c["gflops_best"]) if convs else None
    best = max(gemm["gflops_best"], conv["gflops_best"] if conv else 0.0)
    source = (f"torch.mm {gemm['n']}^3" if best == gemm["gflops_best"] else
              f"F.conv2d input {conv['input']} weight {conv['weight']} (channels-last)")
    th = theoretical.get("gflops")
    if th and best > th:
        log(f"warning: measured peak {best:.0f} GFLOP/s exceeds the theoretical {th:.0f} GFLOP/s "
            f"({theoretical['assumptions']}): a clock or FMA-unit assumption is off")
    return {"gflops": best, "source": source, "gemm_gflops": gemm["gflops_best"], "gemm_n": gemm["n"],
            "conv_gflops": conv["gflops_best"] if conv else None, "theoretical_gflops": th,
            "measured_over_theoretical": best / th if th else None}


def mfu_ratio(achieved_flops_per_s: float, peak: dict[str, Any], stage: str) -> tuple[float, float]:
    """(MFU clamped to 1, raw ratio) of achieved FLOP/s over the measured peak; a raw ratio above 1 means the peak
    missed a faster kernel the stage runs, and is logged as a warning."""
    raw = achieved_flops_per_s / (peak["gflops"] * 1e9)
    if raw > 1:
        log(f"warning: {stage} MFU {raw:.2f} > 1 against the measured peak ({peak['source']}); clamped to 1")
    return min(raw, 1.0), raw


def forward_flops(model: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[int, dict[str, int]]:
    """Model FLOPs of one forward (matmuls, convolutions, attention; 2 per multiply-add) by FlopCounterMode.
    On CPU, attention runs as aten._scaled_dot_product_flash_attention_for_cpu, which torch's registry
    does not count: it is counted here with torch's own formula for the other attention kernels."""
    def sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    custom = {getattr(torch.ops.aten, name): sdpa for name in ("_scaled_dot_product_flash_attention_for_cpu",)
              if hasattr(torch.ops.aten, name)}
    with FlopCounterMode(display=False, custom_mapping=custom) as fc:
        with torch.inference_mode():
            model(*args, **kwargs)
    by_op = {str(k): int(v) for k, v in fc.get_flop_counts().get("Global", {}).items()}
    return int(fc.get_total_flops()), by_op


def time_stages(cascade: Cascade, tokens, mask, w, seeds, steps: int, sr_steps: int, sr_weight: float | None,
                kind: str, thresholding: str, percentile: float) -> list[float]:
    """Wall seconds of each stage while sampling one micro-batch (from per-step timestamps)."""
    stamps: list[float] = []
    t0 = time.perf_counter()
    cascade.sample(tokens, mask, w, seeds, steps=steps, sr_steps=sr_steps, kind=kind, thresholding=thresholding,
                   percentile=percentile, sr_weight=sr_weight, on_step=lambda i: stamps.append(time.perf_counter()))
    bounds = [t0, stamps[steps - 1]] + ([stamps[steps + sr_steps - 1]] if len(cascade.stages) > 1 else [])
    return [bounds[i + 1] - bounds[i] for i in range(len(bounds) - 1)]


def stage_forwards(cascade: Cascade, tokens, mask, sr_weight: float | None) -> list[tuple[tuple, dict, bool]]:
    """Each stage's forward as the sampler makes it: (args, kwargs, guided); SR stages guided unless sr_weight = 1."""
    out = []
    for i, st in enumerate(cascade.stages):
        guided = i == 0 or sr_weight is None or float(sr_weight) != 1.0
        out.append((*stage_forward_args(st.cfg, tokens, mask, guided=guided), guided))
    return out


def stage_convs(cascade: Cascade, forwards: list, repeats: int = 10) -> list[list[dict[str, Any]]]:
    """Every stage's convolution shapes, each timed alone (``conv_throughput``)."""
    return [[conv_throughput(c, repeats) for c in conv_shapes(st.model, args, kwargs)]
            for st, (args, kwargs, _) in zip(cascade.stages, forwards)]


def measure_mfu(cascade: Cascade, micro_batch: int, steps: int, sr_steps: int, sr_weight: float | None, peak: dict,
                repeats: int, *, w: float, kind: str, thresholding: str, percentile: float) -> dict[str, Any]:
    """Base stage at ``w`` (cond + uncond rows); SR stages at ``sr_weight`` as the config samples them. ``peak`` is
    ``matmul_peak``'s GEMM result; the denominator adds the stages' convolution shapes (``cpu_peak``)."""
    tokens, mask, wv, seeds = sampling_inputs(cascade, micro_batch, w=w)
    runs = [time_stages(cascade, tokens, mask, wv, seeds, steps, sr_steps, sr_weight, kind, thresholding, percentile)
            for _ in range(repeats + 1)][1:]
    forwards = stage_forwards(cascade, tokens, mask, sr_weight)
    convs = stage_convs(cascade, forwards)
    best = cpu_peak(peak, [c for cs in convs for c in cs], theoretical_peak(torch.get_num_threads()))
    out: dict[str, Any] = {}
    for i, (st, (args, kwargs, guided)) in enumerate(zip(cascade.stages, forwards)):
        n_steps = steps if i == 0 else sr_steps
        flops, by_op = forward_flops(st.model, args, kwargs)
        secs = [r[i] for r in runs]
        fps = n_steps / median(secs)
        achieved = flops * fps
        mfu, raw = mfu_ratio(achieved, best, st.cfg.kind)
        out[st.cfg.kind] = {
            "mfu": mfu, "mfu_unclamped": raw, "peak": best, "conv_shapes": convs[i],
            "flops_per_forward": flops, "flops_by_op": by_op,
            "forward_shape": [int(s) for s in args[0].shape], "params": sum(p.numel() for p in st.model.parameters()),
            "steps": n_steps, "guided": guided, "stage_seconds": secs, "forwards_per_second": fps,
            "achieved_gflops": achieved / 1e9, "images_per_second": micro_batch / median(secs)}
    return out


def main(argv: list[str] | None = None) -> int:
    """The peak's components on this machine (no sampling): GEMM sizes, the shipped stages' convolutions, FMA peak."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--quick", action="store_true", help="imagen_tiny and GEMMs up to 1024")
    a = p.parse_args(argv)
    offline_env()
    if a.threads:
        torch.set_num_threads(a.threads)
    model = "imagen_tiny" if a.quick else "imagen_base"
    cfg = compose([f"model={model}"])
    with tempfile.TemporaryDirectory() as d:
        cascade = load_cascade(model, stage_files(model, Path(d))[0])
    tokens, mask, _, _ = sampling_inputs(cascade, int(cfg["sampler"]["micro_batch"]), w=guidance_settings().w)
    convs = stage_convs(cascade, stage_forwards(cascade, tokens, mask, cfg["guidance"]["sr_weight"]))
    gemm = matmul_peak(512 if a.quick else 2048, 5 if a.quick else 10)
    th = theoretical_peak(torch.get_num_threads())
    out = {"threads": torch.get_num_threads(), "cpu_features": cpu_features(), "gemm": gemm["by_size"],
           "conv_best_per_stage": [max((c["gflops_best"] for c in cs), default=None) for cs in convs],
           "theoretical": th, "peak": cpu_peak(gemm, [c for cs in convs for c in cs], th)}
    print(json.dumps(out, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
