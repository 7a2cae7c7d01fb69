"""The main job: prompts -> cascade samples over a guidance sweep -> metrics -> plots.

    python -m bench.run model=imagen_base guidance=sweep [prompts=drawbench prompts.limit=N]

Hydra stops here: everything below takes typed arguments.
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from bench import rundir
from bench.distributed import Dist, agree_run_dir, current, default_threads, env_world, process_group
from bench.generate import generate, manifest_rows, plan_jobs
from bench.generators import Generator, build_generator
from bench.metrics.score_run import MetricsConfig, score_run
from bench.prompts.registry import load_prompts
from bench.report import write_run_outputs
from bench.rundir import RunConfigMismatch
from bench.runinfo import git_revision, peak_memory_mib, versions
from imagen.cascade import REPO_ROOT

log = logging.getLogger("bench.run")

# settings that change pixels: a run directory may only be resumed with the same values
GENERATION_KEYS = ("model", "guidance", "sampler", "seed", "samples_per_prompt")
__all__ = ["GENERATION_KEYS", "RunConfigMismatch", "flatten", "run", "main"]


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def run(cfg: dict[str, Any], run_dir: Path, dist: Dist | None = None) -> dict[str, Any]:
    """Run the whole job from a plain (resolved) config dict; returns the run summary.

    Under torchrun every rank calls this with its ``dist`` (``bench.distributed``): images and metric
    features are sharded, rank 0 writes the shared files. Rank 0 holds ``RUN/.lock`` throughout.
    """
    dist = dist or current()
    run_dir.mkdir(parents=True, exist_ok=True)
    with rundir.run_lock(run_dir, dist):
        return _run(cfg, run_dir, dist)


def _set_threads(cfg: dict[str, Any], dist: Dist) -> None:
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    elif dist.world > 1:
        torch.set_num_threads(default_threads(dist))


def _warn_random(run_dir: Path) -> None:
    rundir.atomic_write_text(
        "WARNING: at least one stage of this cascade ran with RANDOM weights (no checkpoint found).\n"
        "Its images and metrics say nothing about a trained model.\n", run_dir / rundir.RANDOM_WEIGHTS)
    log.warning("RANDOM WEIGHTS: see %s", run_dir / rundir.RANDOM_WEIGHTS)


def generation_settings(cfg: dict[str, Any], generator: Generator) -> dict[str, Any]:
    """What generation.json holds: the config groups that change pixels, flattened, and the generator's
    identity (``generator.*``: kind, weights digests), so that a run directory refuses another model."""
    out = flatten({k: cfg[k] for k in GENERATION_KEYS})
    if "model.dtype" in out and getattr(generator, "dtype", None):
        out["model.dtype"] = generator.dtype  # resolved: "auto" gives other pixels on other CPUs
    out.update({f"generator.{k}": v for k, v in generator.identity().items()})
    return out


def check_ranks_agree(dist: Dist, settings: dict[str, Any]) -> None:
    """Every rank generates with the same settings, or every rank stops: ranks on other machines may resolve
    ``model.dtype=auto`` differently (bf16 where the CPU has it) or hold other checkpoint files."""
    differ = sorted({k for other in dist.all_gather(settings) for k in rundir.differing_keys(other, settings)})
    if differ:
        raise RunConfigMismatch(f"the ranks would make images with different settings ({', '.join(differ)}); "
                                "pin them (e.g. model.dtype=float32) or give every rank the same files")


def _generate(cfg: dict[str, Any], run_dir: Path, dist: Dist) -> tuple[Generator, list, dict[str, Any]]:
    """Prompts -> images and manifest.csv; refuses a run directory made with other settings.
    Returns the generator, the jobs and counts (generated, skipped, seconds: the sampling itself)."""
    prompts = load_prompts(**cfg["prompts"])
    jobs = plan_jobs(prompts, [float(w) for w in cfg["guidance"]["weights"]], int(cfg["samples_per_prompt"]),
                     int(cfg["seed"]))
    generator = build_generator(cfg)
    gen_cfg = generation_settings(cfg, generator)
    check_ranks_agree(dist, gen_cfg)
    dist.on_main(rundir.check_generation, run_dir, gen_cfg, bool(cfg.get("resume", True)))
    if dist.is_main:
        rundir.write_generation(run_dir, gen_cfg)
        if generator.random_weights:
            _warn_random(run_dir)
    t0 = time.time()
    counts: dict[str, Any] = generate(generator, jobs, run_dir, int(cfg["sampler"]["micro_batch"]),
                                      shard=(dist.rank, dist.world), progress=dist.is_main, sync=dist.barrier)
    counts["generated"] = sum(c["generated"] for c in dist.all_gather(counts))  # also: every rank is done
    if dist.is_main:
        rundir.write_manifest(run_dir, manifest_rows(jobs, generator.image_size))
    dist.barrier()
    counts["seconds"] = time.time() - t0
    return generator, jobs, counts


def _run_info(cfg: dict[str, Any], generator: Generator, jobs: list, counts: dict[str, int], dist: Dist,
              times: dict[str, float]) -> dict[str, Any]:
    return {
        "versions": versions(),
        "git_revision": git_revision(REPO_ROOT),
        "command": " ".join(sys.argv),
        "seed": cfg["seed"],
        "num_prompts": len({j.prompt.id for j in jobs}),
        "num_images": len(jobs),
        "random_weights": generator.random_weights,
        **generator.info(),  # kind, device, stages (checkpoints and digests), text encoder
        "generator": generator.identity(),
        "threads": torch.get_num_threads(),
        "world_size": dist.world,
        "images_generated": counts["generated"],
        "images_resumed": counts["skipped"],
        "wall_time_s": {k: round(v, 2) for k, v in times.items()},
        "peak_memory_mib": round(peak_memory_mib(), 1),
    }


def _run(cfg: dict[str, Any], run_dir: Path, dist: Dist) -> dict[str, Any]:
    t_start = time.time()
    _set_threads(cfg, dist)
    generator, jobs, counts = _generate(cfg, run_dir, dist)
    t_gen = counts["seconds"]
    metrics_table, t_metrics = None, 0.0
    if cfg.get("metrics", {}).get("enabled", False):
        t0 = time.time()
        metrics_table = score_run(run_dir, MetricsConfig.from_dict(cfg["metrics"]), dist)
        t_metrics = time.time() - t0
    times = {"generation": t_gen, "metrics": t_metrics, "total": time.time() - t_start}
    info = _run_info(cfg, generator, jobs, counts, dist, times)
    if dist.is_main:
        rundir.write_json(run_dir / rundir.RUN_INFO, info)
        write_run_outputs(run_dir, info)  # pareto.png/svg, alignment.png, grid.png, report.md/html
    return {"info": info, "metrics": metrics_table}


def print_summary(result: dict[str, Any], run_dir: Path) -> None:
    info = result["info"]
    table = result["metrics"]
    if table is not None and len(table):
        cols = [c for c in ("guidance_weight", "category", "num_images", "alignment", "clip_score", "fd") if c in table]
        view = table[table["category"] == "all"][cols] if "category" in table else table[cols]
        print(view.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if info["random_weights"]:
        print("WARNING: RANDOM WEIGHTS - no trained checkpoint was found for at least one stage.")
    wt = info["wall_time_s"]
    print(f"run dir: {run_dir}\nimages: {info['num_images']} ({info['images_generated']} generated, "
          f"{info['images_resumed']} resumed)\nwall time: {wt['total']:.1f} s (generation {wt['generation']:.1f} s, "
          f"metrics {wt['metrics']:.1f} s); peak memory {info['peak_memory_mib']:.0f} MiB")


def main() -> None:
    if env_world().rank > 0:  # torchrun: only rank 0 writes .hydra/ and the log file
        sys.argv.append("hydra.output_subdir=null")
        if not any(a.startswith(("hydra/job_logging", "override hydra/job_logging")) for a in sys.argv):
            sys.argv.append("hydra/job_logging=stdout")

    @hydra.main(version_base="1.3", config_path="../conf", config_name="config")
    def _main(cfg: DictConfig) -> None:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        plain = OmegaConf.to_container(cfg, resolve=True)
        with process_group(str(plain.get("device", "auto"))) as dist:
            run_dir = agree_run_dir(dist, run_dir)
            result = run(plain, run_dir, dist)
            if dist.is_main:
                print_summary(result, run_dir)

    _main()


if __name__ == "__main__":
    main()
