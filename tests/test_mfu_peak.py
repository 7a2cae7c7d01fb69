"""The MFU denominator (benchmarks/mfu.py): the best of GEMMs and the model's own convolution shapes, the
theoretical FMA peak from /proc/cpuinfo, and MFU clamped to 1."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import bf16_support, cpu_features
from benchmarks.mfu import conv_shapes, conv_throughput, cpu_peak, mfu_ratio, theoretical_peak
from conftest import TINY_BASE, _randomised


def _cpuinfo(flags: str, cpus: list[tuple[int, int]], mhz: float = 2000.0) -> str:
    return "\n\n".join(f"processor\t: {i}\nphysical id\t: {p}\ncore id\t\t: {c}\ncpu MHz\t\t: {mhz}\nflags\t\t: {flags}"
                       for i, (p, c) in enumerate(cpus))


def test_theoretical_peak_from_cpuinfo():
    avx512 = _cpuinfo("fpu sse avx avx2 fma avx512f avx512_bf16", [(0, 0), (0, 1), (1, 0), (1, 1)], 3000.0)
    th = theoretical_peak(threads=2, cpuinfo=avx512)
    assert th["flops_per_cycle_per_core"] == 16 * 2 * 2 and th["cores"] == 2
    assert th["gflops"] == pytest.approx(2 * 64 * 3.0)
    assert cpu_features(avx512)["avx512_bf16"] and bf16_support(cpu_features(avx512)).startswith("native")
    # hyper-threads share a core's FMA units: 4 threads on 2 physical cores count 2 cores
    avx2 = _cpuinfo("fpu avx avx2 fma", [(0, 0), (0, 0), (0, 1), (0, 1)])
    th = theoretical_peak(threads=4, cpuinfo=avx2)
    assert th["cores"] == 2 and th["flops_per_cycle_per_core"] == 32 and th["gflops"] == pytest.approx(2 * 32 * 2.0)
    assert not cpu_features(avx2)["avx512f"] and bf16_support(cpu_features(avx2)).startswith("emulated")
    assert theoretical_peak(1, cpuinfo="")["gflops"] is None  # nothing readable: no number rather than a guess


def test_conv_shapes_are_the_models_own_and_flops_match_the_counter():
    model = _randomised("base", TINY_BASE, 0).eval().to(memory_format=torch.channels_last)
    b = 4
    args = (torch.randn(b, 3, 16, 16).contiguous(memory_format=torch.channels_last), torch.full((b,), 0.5),
            torch.randn(b, 16, 384), torch.ones(b, 16, dtype=torch.bool))
    shapes = conv_shapes(model, args, {})
    n_convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert sum(c["calls"] for c in shapes) == n_convs and all(c["input"][0] == b for c in shapes)
    assert not any(h for m in model.modules() for h in m._forward_hooks.values())  # hooks removed
    c = max(shapes, key=lambda c: c["input"][2] * c["weight"][0])
    r = conv_throughput(c, repeats=2)
    x, w = torch.randn(c["input"]), torch.randn(c["weight"])
    with FlopCounterMode(display=False) as fc:
        torch.nn.functional.conv2d(x, w, None, c["stride"], c["padding"], c["dilation"], c["groups"])
    assert r["flops"] == fc.get_total_flops() and r["gflops_best"] > 0


def test_peak_is_the_best_of_gemm_and_convs_and_mfu_is_clamped(capsys):
    gemm = {"n": 2048, "gflops_best": 100.0}
    conv = {"input": [16, 64, 8, 8], "weight": [64, 64, 3, 3], "gflops_best": 160.0}
    peak = cpu_peak(gemm, [conv, {**conv, "gflops_best": 90.0}], {"gflops": 150.0, "assumptions": "x"})
    assert peak["gflops"] == 160.0 and "F.conv2d" in peak["source"] and peak["measured_over_theoretical"] > 1
    assert "exceeds the theoretical" in capsys.readouterr().err
    assert cpu_peak(gemm, [], {"gflops": None})["source"] == "torch.mm 2048^3"
    assert mfu_ratio(80e9, peak, "base") == (0.5, 0.5)
    mfu, raw = mfu_ratio(200e9, peak, "base")
    assert mfu == 1.0 and raw == pytest.approx(1.25) and "clamped to 1" in capsys.readouterr().err
