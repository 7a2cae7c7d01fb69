"""Before / after of the optimisation the profile pointed at: convolutions (oneDNN) dominate sampling
on CPU, and they run faster on channels-last tensors. Times one U-Net forward of each shipped stage
at the sampler's guided micro-batch shape (cond + uncond rows) with contiguous (NCHW, "before")
and channels-last (NHWC, what ``Cascade.load`` uses, "after") weights and inputs, interleaved
so both see the same machine load, and checks the outputs agree.

    python -m benchmarks.memory_format [--threads 2] [--repeats 20]   # or: python benchmarks/memory_format.py

Writes ``benchmarks/memory_format.json``.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as `python benchmarks/memory_format.py`: import from the repo root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402

from benchmarks.common import (REPO, compose, forward_args, guidance_settings, offline_env,  # noqa: E402
                               sampling_inputs, stage_forward_args)
from imagen.cascade import Cascade, StageConfig  # noqa: E402
from imagen.text_encoder import TextEncoderConfig  # noqa: E402


def time_forward(model: torch.nn.Module, args: tuple, kwargs: dict) -> float:
    t0 = time.perf_counter()
    with torch.inference_mode():
        model(*args, **kwargs)
    return time.perf_counter() - t0


def to_format(obj, fmt: torch.memory_format):
    if isinstance(obj, torch.Tensor) and obj.dim() == 4:
        return obj.contiguous(memory_format=fmt)
    return obj


def main() -> int:
    a = forward_args()
    offline_env()
    cfg = compose(["model=imagen_base"])
    mb = int(cfg["sampler"]["micro_batch"])
    stages = [StageConfig(**st) for st in cfg["model"]["stages"]]
    cascade = Cascade.load(stages, TextEncoderConfig(**cfg["model"]["text_encoder"]), device="cpu",
                           allow_random=False)
    tokens, mask, _, _ = sampling_inputs(cascade, mb, w=guidance_settings().w)
    out: dict = {"threads": torch.get_num_threads(), "micro_batch": mb, "repeats": a.repeats, "stages": {}}
    for st in cascade.stages:
        args, kwargs = stage_forward_args(st.cfg, tokens, mask, guided=True)
        variants = {}
        for name, fmt in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
            st.model.to(memory_format=fmt)
            variants[name] = ([to_format(x, fmt) for x in args], {k: to_format(v, fmt) for k, v in kwargs.items()})
        times: dict[str, list[float]] = {k: [] for k in variants}
        outputs = {}
        for r in range(a.repeats + 2):
            for name, fmt in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
                st.model.to(memory_format=fmt)
                v_args, v_kwargs = variants[name]
                dt = time_forward(st.model, tuple(v_args), v_kwargs)
                if r >= 2:  # two warm-up rounds
                    times[name].append(dt)
                if r == 0:
                    with torch.inference_mode():
                        outputs[name] = st.model(*v_args, **v_kwargs).float()
        med = {k: statistics.median(v) for k, v in times.items()}
        out["stages"][st.cfg.kind] = {
            "input_shape": list(args[0].shape),
            "ms_contiguous": 1e3 * med["contiguous"], "ms_channels_last": 1e3 * med["channels_last"],
            "speedup": med["contiguous"] / med["channels_last"],
            "max_abs_diff": float((outputs["contiguous"] - outputs["channels_last"]).abs().max()),
        }
        st.model.to(memory_format=torch.channels_last)
    path = REPO / "benchmarks" / "memory_format.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
