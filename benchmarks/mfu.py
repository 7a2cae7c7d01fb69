"""Model-FLOPs utilisation of each cascade stage while sampling (``mfu`` of results.json): FLOPs of one
forward at the sampler's micro-batch shape, times forwards per second while ``Cascade.sample`` runs, over
the fp32 matmul peak measured in the same run."""
from __future__ import annotations

import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from benchmarks.common import median, sampling_inputs, stage_forward_args, timed
from imagen.cascade import Cascade


def matmul_peak(n: int, repeats: int) -> dict[str, Any]:
    """fp32 matmul throughput of a large torch.mm at the current thread count: the peak MFU divides by."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    times = timed(lambda: torch.mm(a, b), repeats, warmup=2)
    flops = 2.0 * n ** 3
    return {"n": n, "flops": flops, "seconds": times, "gflops_best": flops / min(times) / 1e9,
            "gflops_median": flops / median(times) / 1e9}


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


def measure_mfu(cascade: Cascade, micro_batch: int, steps: int, sr_steps: int, sr_weight: float | None, peak: dict,
                repeats: int, *, w: float, kind: str, thresholding: str, percentile: float) -> dict[str, Any]:
    """Base stage at ``w`` (cond + uncond rows); SR stages at ``sr_weight`` as the config samples them."""
    tokens, mask, wv, seeds = sampling_inputs(cascade, micro_batch, w=w)
    runs = [time_stages(cascade, tokens, mask, wv, seeds, steps, sr_steps, sr_weight, kind, thresholding, percentile)
            for _ in range(repeats + 1)][1:]
    out: dict[str, Any] = {}
    for i, st in enumerate(cascade.stages):
        n_steps = steps if i == 0 else sr_steps
        guided = i == 0 or sr_weight is None or float(sr_weight) != 1.0
        args, kwargs = stage_forward_args(st.cfg, tokens, mask, guided=guided)
        flops, by_op = forward_flops(st.model, args, kwargs)
        secs = [r[i] for r in runs]
        fps = n_steps / median(secs)
        achieved = flops * fps
        out[st.cfg.kind] = {
            "mfu": achieved / (peak["gflops_best"] * 1e9),
            "flops_per_forward": flops, "flops_by_op": by_op,
            "forward_shape": [int(s) for s in args[0].shape], "params": sum(p.numel() for p in st.model.parameters()),
            "steps": n_steps, "guided": guided, "stage_seconds": secs, "forwards_per_second": fps,
            "achieved_gflops": achieved / 1e9, "images_per_second": micro_batch / median(secs)}
    return out
