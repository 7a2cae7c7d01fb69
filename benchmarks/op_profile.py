"""The top operators by self CPU time while sampling one micro-batch (``profile_top_ops`` of results.json).
(Not named ``profile``: that would shadow the standard library module cProfile imports.)"""
from __future__ import annotations

from typing import Any

from torch.profiler import ProfilerActivity, profile

from benchmarks.common import sampling_inputs
from imagen.cascade import Cascade


def profile_sampling(cascade: Cascade, micro_batch: int, steps: int, sr_weight: float | None, *, w: float,
                     kind: str, thresholding: str, percentile: float, top: int = 15) -> list[dict[str, Any]]:
    tokens, mask, wv, seeds = sampling_inputs(cascade, micro_batch, w=w)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        cascade.sample(tokens, mask, wv, seeds, steps=steps, sr_steps=steps, kind=kind, thresholding=thresholding,
                       percentile=percentile, sr_weight=sr_weight)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return [{"op": e.key, "calls": int(e.count), "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 3),
             "self_cpu_pct": round(100.0 * e.self_cpu_time_total / total, 2),
             "cpu_total_ms": round(e.cpu_time_total / 1e3, 3)} for e in rows]
