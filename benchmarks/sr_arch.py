"""Before / after of the super-resolution stage's shape: the previous 3-level Efficient U-Net (32, 64, 128
channels at 64, 32, 16 px, blocks 1-2-3) against the shipped 4-level one (16, 32, 64, 128 channels at 64, 32,
16, 8 px, blocks 1-2-3-4), which moves compute from the 64 px level to the low resolutions as the paper's
Efficient U-Net does (appendix B.1). Times one forward at the sampler's guided micro-batch shape (cond +
uncond rows, channels-last, as ``Cascade.sample`` runs it), the two interleaved so both see the same
machine load, with FLOPs counted as ``benchmarks.mfu`` counts them. Random weights of each shape (speed
does not depend on the weights).

    python -m benchmarks.sr_arch [--threads 2] [--repeats 20]   # or: python benchmarks/sr_arch.py

Writes ``benchmarks/sr_arch.json``.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as `python benchmarks/sr_arch.py`: import from the repo root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402

from benchmarks.common import (REPO, compose, forward_args, offline_env, randomised_stage,  # noqa: E402
                               stage_forward_args)
from benchmarks.mfu import forward_flops  # noqa: E402
from imagen.cascade import StageConfig  # noqa: E402

BEFORE = {"image_size": 64, "lowres_size": 32, "channels": [32, 64, 128], "blocks": [1, 2, 3], "text_dim": 384,
          "heads": 4}


def main() -> int:
    a = forward_args()
    offline_env()
    cfg = compose(["model=imagen_base"])
    mb = int(cfg["sampler"]["micro_batch"])
    length = int(cfg["model"]["text_encoder"]["max_length"])
    stage = StageConfig(**cfg["model"]["stages"][1])
    after = dict(stage.arch)
    models = {name: randomised_stage("sr", arch, 0).eval().to(memory_format=torch.channels_last)
              for name, arch in (("before", BEFORE), ("after", after))}
    torch.manual_seed(0)  # random text tokens: the forward's cost does not depend on them
    tokens, mask = torch.randn(mb, length, int(after["text_dim"])), torch.ones(mb, length, dtype=torch.bool)
    args, kwargs = stage_forward_args(stage, tokens, mask, guided=True)
    times: dict[str, list[float]] = {k: [] for k in models}
    for r in range(a.repeats + 2):
        for name, model in models.items():
            t0 = time.perf_counter()
            with torch.inference_mode():
                model(*args, **kwargs)
            if r >= 2:  # two warm-up rounds
                times[name].append(time.perf_counter() - t0)
    out: dict = {"threads": torch.get_num_threads(), "micro_batch": mb, "forward_shape": list(args[0].shape),
                 "repeats": a.repeats, "archs": {"before": BEFORE, "after": after}}
    for name, model in models.items():
        flops, _ = forward_flops(model, args, kwargs)
        ms = 1e3 * statistics.median(times[name])
        out[name] = {"params": sum(q.numel() for q in model.parameters()), "gflops_per_forward": flops / 1e9,
                     "ms_per_forward": ms, "achieved_gflops": flops / ms / 1e6}
    out["speedup"] = out["before"]["ms_per_forward"] / out["after"]["ms_per_forward"]
    out["flops_ratio"] = out["before"]["gflops_per_forward"] / out["after"]["gflops_per_forward"]
    path = REPO / "benchmarks" / "sr_arch.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
