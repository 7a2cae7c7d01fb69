"""bf16 sampling against float32, side by side: the shipped cascade samples one guided micro-batch
(the default sampler and guidance, both stages) with ``model.dtype`` float32 and bfloat16 (U-Net
forwards under torch.autocast, the sampler's math in float32), interleaved so both see the same
machine load. Reports the median seconds of each, the speed-up, and how far the bf16 images are
from the float32 ones (uint8 pixels). Whether the *metrics* stay within their intervals is the
harness's job: ``python -m bench.run model.dtype=bfloat16 ...`` against a float32 run with
``python -m bench.compare`` (README "Performance").

    python -m benchmarks.bf16 [--threads 2] [--repeats 5]   # or: python benchmarks/bf16.py

Writes ``benchmarks/bf16.json`` with the machine's CPU features beside the numbers.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as `python benchmarks/bf16.py`: import from the repo root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import REPO, compose, forward_args, guidance_settings, machine_facts, offline_env  # noqa: E402
from benchmarks.common import sampling_inputs  # noqa: E402
from imagen.cascade import Cascade, StageConfig, to_uint8  # noqa: E402
from imagen.device import DTYPE_NAMES as DTYPES  # noqa: E402  (float32 first: the reference)
from imagen.text_encoder import TextEncoderConfig  # noqa: E402


def sample_once(cascade: Cascade, inputs: tuple, sampler: dict, g) -> tuple[float, np.ndarray]:
    tokens, mask, w, seeds = inputs
    t0 = time.perf_counter()
    x = cascade.sample(tokens, mask, w, seeds, steps=int(sampler["steps"]), kind=sampler["kind"],
                       grid=sampler["grid"], thresholding=g.thresholding, percentile=g.percentile,
                       sr_steps=sampler["sr_steps"], sr_weight=g.sr_weight, aug_level=float(sampler["aug_level"]))
    return time.perf_counter() - t0, to_uint8(x)


def main() -> int:
    a = forward_args()
    offline_env()
    cfg = compose(["model=imagen_base"])
    sampler, g = cfg["sampler"], guidance_settings()
    stages = [StageConfig(**st) for st in cfg["model"]["stages"]]
    enc = TextEncoderConfig(**cfg["model"]["text_encoder"])
    cascade = Cascade.load(stages, enc, device="cpu", allow_random=False)
    inputs = sampling_inputs(cascade, int(sampler["micro_batch"]), w=g.w)
    times: dict[str, list[float]] = {d: [] for d in DTYPES}
    images: dict[str, np.ndarray] = {}
    for r in range(a.repeats + 1):
        for d in DTYPES:
            cascade.dtype = d
            dt, img = sample_once(cascade, inputs, sampler, g)
            if r >= 1:  # one warm-up round
                times[d].append(dt)
            images[d] = img
    med = {d: statistics.median(v) for d, v in times.items()}
    diff = np.abs(images["float32"].astype(int) - images["bfloat16"].astype(int))
    out = {"machine": machine_facts(), "threads": torch.get_num_threads(), "repeats": a.repeats,
           "micro_batch": int(sampler["micro_batch"]), "guidance_weight": g.w,
           "sampler": {k: sampler[k] for k in ("kind", "steps", "sr_steps")},
           "seconds": {d: med[d] for d in DTYPES}, "speedup_bf16": med["float32"] / med["bfloat16"],
           "pixels": {"mean_abs_diff": float(diff.mean()), "max_abs_diff": int(diff.max()),
                      "share_equal": float((diff == 0).mean())}}
    path = REPO / "benchmarks" / "bf16.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "machine"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
