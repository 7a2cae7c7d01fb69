"""What the diffusers adapter costs: the harness (``bench.generate`` over ``DiffusersGenerator``: per-image
generators, fixed micro-batches, uint8 conversion, PNG writes) against calling the pipeline directly for
the same images, steps and guidance weight (batches of the same size, one generator list per batch, images
converted to uint8 in memory). Alternating rounds on one tiny random-weight Stable Diffusion pipeline
(``benchmarks.tiny_pipelines``); each side's time is its minimum over rounds.

    python -m benchmarks.adapter [--images 16 --steps 4 --rounds 3]   # -> benchmarks/adapter.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # run as `python benchmarks/adapter.py`: import from the repo root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.common import REPO, log, offline_env  # noqa: E402
from benchmarks.tiny_pipelines import save_sd  # noqa: E402
from bench.generate import generate, plan_jobs  # noqa: E402
from bench.generators import DiffusersGenerator, DiffusersSettings  # noqa: E402
from bench.prompts.shapes_set import shapes_prompts  # noqa: E402


def direct(pipe: Any, prompts: list[str], seeds: list[int], w: float, steps: int, mb: int) -> np.ndarray:
    """The pipeline called by hand, ``mb`` prompts per call, as a user without the harness would."""
    out = []
    for i in range(0, len(prompts), mb):
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds[i:i + mb]]
        x = pipe(prompt=prompts[i:i + mb], guidance_scale=w, num_inference_steps=steps, generator=gens,
                 output_type="np").images
        out.append((x * 255).round().astype(np.uint8))
    return np.concatenate(out)


def measure_adapter(work: Path, n_images: int = 16, steps: int = 4, w: float = 5.0, mb: int = 4,
                    rounds: int = 3) -> dict[str, Any]:
    path = save_sd(work / "pipe")
    gen = DiffusersGenerator(DiffusersSettings(paths=(str(path),), steps=steps))
    jobs = plan_jobs(shapes_prompts(n_images), [w], 1, 0)
    prompts, seeds = [j.prompt.text for j in jobs], [j.seed for j in jobs]
    times: dict[str, list[float]] = {"direct": [], "harness": []}
    same = True
    for r in range(rounds + 1):  # round 0 warms up both sides
        t0 = time.perf_counter()
        ref = direct(gen.stages[0], prompts, seeds, w, steps, mb)
        t1 = time.perf_counter()
        run_dir = work / f"run{r}"
        generate(gen, jobs, run_dir, mb, progress=False)
        t2 = time.perf_counter()
        if r:
            times["direct"].append(t1 - t0)
            times["harness"].append(t2 - t1)
        same &= bool(np.array_equal(ref, np.stack([_png(run_dir / j.path) for j in jobs])))
    best = {k: min(v) for k, v in times.items()}
    return {"overhead": best["harness"] / best["direct"] - 1.0, "seconds": times, "images": n_images,
            "steps": steps, "guidance_weight": w, "micro_batch": mb, "images_identical": same,
            "pipeline": "tiny random StableDiffusionPipeline, 16x16 images (8x8 latents)"}


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)
    offline_env()
    with tempfile.TemporaryDirectory() as tmp:
        log("diffusers adapter vs direct pipeline calls")
        out = measure_adapter(Path(tmp), a.images, a.steps, rounds=a.rounds)
    out["threads"] = torch.get_num_threads()
    (REPO / "benchmarks" / "adapter.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
