"""The main job: prompts -> cascade samples over a guidance sweep -> metrics -> plots.

    python -m bench.run model=imagen_base guidance=sweep [prompts=drawbench prompts.limit=N]

Hydra stops here: everything below takes typed arguments.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.distributed import Dist

log = logging.getLogger("bench.run")

# settings that change pixels: a run directory may only be resumed with the same values
GENERATION_KEYS = ("model", "guidance", "sampler", "seed", "samples_per_prompt")


class RunConfigMismatch(RuntimeError):
    pass


def check_resumable(run_dir: Path, gen_cfg: dict[str, Any], resume: bool) -> None:
    """Refuse to mix images of different settings in one run directory."""
    f = run_dir / "generation.json"
    if not f.exists():
        return
    old = json.loads(f.read_text())
    if not resume:
        raise RunConfigMismatch(f"{run_dir} already holds a run and resume=false: choose another hydra.run.dir")
    diff = sorted(k for k in set(old) | set(gen_cfg) if old.get(k) != gen_cfg.get(k))
    # a different prompt set or guidance list is fine (new images are added), other settings are not
    diff = [k for k in diff if k not in ("guidance.weights", "prompts")]
    if diff:
        raise RunConfigMismatch(
            f"{run_dir} holds images made with other settings ({', '.join(diff)}); its images are kept. "
            "Use a new hydra.run.dir, or the same settings to resume.")


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def run(cfg: dict[str, Any], run_dir: Path, dist: "Dist | None" = None) -> dict[str, Any]:
    """Run the whole job from a plain (resolved) config dict; returns the run summary.

    Under torchrun every rank calls this with its ``dist`` (``bench.distributed``): images and metric
    features are sharded, rank 0 writes the shared files. Rank 0 holds ``RUN/.lock`` throughout.
    """
    from bench.distributed import current, run_lock

    dist = dist or current()
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir, dist):
        return _run(cfg, run_dir, dist)


def _run(cfg: dict[str, Any], run_dir: Path, dist: "Dist") -> dict[str, Any]:
    import torch

    from bench.distributed import default_threads
    from bench.generate import GenerationSettings, generate, plan_jobs, write_manifest
    from bench.prompts.registry import load_prompts
    from bench.runinfo import git_revision, peak_memory_mib, sha256_file, versions, write_json
    from imagen.cascade import REPO_ROOT, Cascade, StageConfig
    from imagen.text_encoder import TextEncoderConfig

    t_start = time.time()
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    elif dist.world > 1:
        torch.set_num_threads(default_threads(dist))
    g, s, m = cfg["guidance"], cfg["sampler"], cfg["model"]
    gen_cfg = {k: v for k, v in flatten({k: cfg[k] for k in GENERATION_KEYS}).items()}
    dist.on_main(check_resumable, run_dir, gen_cfg, bool(cfg.get("resume", True)))

    prompts = load_prompts(**cfg["prompts"])
    jobs = plan_jobs(prompts, [float(w) for w in g["weights"]], int(cfg["samples_per_prompt"]), int(cfg["seed"]))
    cascade = Cascade.load([StageConfig(**st) for st in m["stages"]], TextEncoderConfig(**m["text_encoder"]),
                           device=cfg.get("device", "auto"))
    if dist.is_main:
        write_json(run_dir / "generation.json", gen_cfg)
    if cascade.random_init and dist.is_main:
        (run_dir / "RANDOM_WEIGHTS.txt").write_text(
            "WARNING: at least one stage of this cascade ran with RANDOM weights (no checkpoint found).\n"
            "Its images and metrics say nothing about a trained model.\n")
        log.warning("RANDOM WEIGHTS: see %s", run_dir / "RANDOM_WEIGHTS.txt")
    settings = GenerationSettings(steps=int(s["steps"]), kind=s["kind"], thresholding=g["thresholding"],
                                  percentile=float(g["percentile"]), sr_steps=s.get("sr_steps"),
                                  sr_weight=g.get("sr_weight"), aug_level=float(s.get("aug_level", 0.0)),
                                  micro_batch=int(s["micro_batch"]))
    t_gen = time.time()
    counts = generate(cascade, jobs, run_dir, settings, shard=(dist.rank, dist.world), progress=dist.is_main,
                      sync=dist.barrier)
    counts["generated"] = sum(c["generated"] for c in dist.all_gather(counts))  # also: every rank is done
    if dist.is_main:
        write_manifest(run_dir, jobs, cascade.image_size)
    dist.barrier()
    t_gen = time.time() - t_gen

    metrics_table, t_metrics = None, 0.0
    if cfg.get("metrics", {}).get("enabled", False):
        from bench.distributed import score_run_sharded
        from bench.metrics.score_run import MetricsConfig

        t0 = time.time()
        metrics_table = score_run_sharded(run_dir, MetricsConfig.from_dict(cfg["metrics"]), dist)
        t_metrics = time.time() - t0

    info = {
        "versions": versions(),
        "git_revision": git_revision(REPO_ROOT),
        "command": " ".join(sys.argv),
        "seed": cfg["seed"],
        "num_prompts": len(prompts),
        "num_images": len(jobs),
        "random_weights": cascade.random_init,
        "text_encoder": cascade.text_encoder.id,
        "truncated_prompts": len(cascade.text_encoder.truncated),
        "stages": [{"kind": st.cfg.kind, "checkpoint": st.cfg.checkpoint, "random_init": st.random_init,
                    "sha256": sha256_file(Path(st.cfg.checkpoint)) if not st.random_init else None,
                    "train_steps": st.info.get("train_steps"), "image_size": st.cfg.image_size}
                   for st in cascade.stages],
        "device": str(cascade.device),
        "threads": torch.get_num_threads(),
        "world_size": dist.world,
        "images_generated": counts["generated"],
        "images_resumed": counts["skipped"],
        "wall_time_s": {"generation": round(t_gen, 2), "metrics": round(t_metrics, 2),
                        "total": round(time.time() - t_start, 2)},
        "peak_memory_mib": round(peak_memory_mib(), 1),
    }
    if not dist.is_main:
        return {"info": info, "metrics": metrics_table}
    write_json(run_dir / "run_info.json", info)
    from bench.report import write_run_outputs

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
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig, OmegaConf

    from bench.distributed import agree_run_dir, env_world, process_group

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
