"""Performance benchmark of imagen-bench: writes ``benchmarks/results.json``.

    python benchmarks/run.py            # full: the shipped cascade (32 -> 64 px), conf/ sampler steps; ~30 min on 2 cores
    python benchmarks/run.py --quick    # everything at tiny sizes (16 -> 32 px cascade, 4 steps), a couple of minutes

Every ratio is measured side by side in one process on one machine; the raw timings behind each
ratio are in the JSON next to it (``details``), with the machine facts. See benchmarks/README.md for
what each number means and how to read it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

SWEEP = (1.0, 2.0, 3.0, 5.0, 7.5, 10.0)  # K = 6 guidance weights (conf/guidance/sweep.yaml)
QUICK_METRICS = {"ref_n": 200, "bootstrap": 100, "fd_bootstrap": 10, "kid_subsets": 10}  # --quick metric settings


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the ``bench.run`` processes of the sweep)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


# ------------------------------------------------------------------------------------------------ setup

def forward_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of the per-forward before/after scripts (``--threads``, ``--repeats``); sets the threads."""
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--repeats", type=int, default=20, help="timed rounds after two warm-up rounds")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    return a


def machine_facts() -> dict[str, Any]:
    from bench.runinfo import git_revision

    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu_count": os.cpu_count(), "cpus_usable": usable, "cpu_model": cpu_model,
            "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
            "mkldnn": torch.backends.mkldnn.is_available(), "python": platform.python_version(),
            "platform": platform.platform(), "git_revision": git_revision(REPO),
            "loadavg_start": list(os.getloadavg()), "nice": os.nice(0)}


def randomised_stage(kind: str, arch: dict, seed: int) -> torch.nn.Module:
    """A stage with random but non-degenerate weights (zero-initialised output layers would ignore the text)."""
    from imagen.checkpoint import build_stage

    torch.manual_seed(seed)
    model = build_stage(kind, arch)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def stage_files(model_name: str, out: Path) -> tuple[dict[str, Path], str]:
    """Checkpoints the benchmark samples with, copied to ``out`` (training may overwrite the shipped ones):
    the shipped ones when present and loadable, else random non-degenerate weights of the config's architecture."""
    import yaml

    from imagen.checkpoint import CheckpointError, load_stage, save_stage

    cfg = yaml.safe_load((REPO / "conf" / "model" / f"{model_name}.yaml").read_text())
    paths, sources = {}, []
    out.mkdir(parents=True, exist_ok=True)
    for i, st in enumerate(cfg["stages"]):
        dst = out / f"{st['kind']}.safetensors"
        src = REPO / st["checkpoint"] if st.get("checkpoint") else None
        if src is not None and src.is_file():
            shutil.copy(src, dst)
            try:
                _, meta = load_stage(dst)
                paths[st["kind"]] = dst
                sources.append(f"{st['kind']}: {st['checkpoint']} (train_steps {meta.get('train_steps')})")
                continue
            except CheckpointError as e:
                log(f"{src} unusable ({e}); using random weights")
        model = randomised_stage(st["kind"], st["arch"], i)
        save_stage(model, dst, st["kind"], dtype=torch.float32, prediction=st["prediction"],
                   image_size=st["image_size"], lowres_size=st["lowres_size"])
        paths[st["kind"]] = dst
        sources.append(f"{st['kind']}: random non-degenerate weights, arch of conf/model/{model_name}.yaml")
    return paths, "; ".join(sources)


def compose(overrides: list[str]) -> dict[str, Any]:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return OmegaConf.to_container(hydra_compose(config_name="config", overrides=overrides), resolve=True)


def load_cascade(model_name: str, ckpt: dict[str, Path], max_length: int | None = None):
    from imagen.cascade import Cascade, StageConfig
    from imagen.text_encoder import TextEncoderConfig

    cfg = compose([f"model={model_name}"])["model"]
    stages = [StageConfig(**{**st, "checkpoint": str(ckpt[st["kind"]])}) for st in cfg["stages"]]
    te = TextEncoderConfig(**{**cfg["text_encoder"], **({"max_length": max_length} if max_length else {})})
    return Cascade.load(stages, te, device="cpu", allow_random=False)


# ------------------------------------------------------------------------------------------------ MFU

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
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    custom = {getattr(torch.ops.aten, name): sdpa for name in ("_scaled_dot_product_flash_attention_for_cpu",)
              if hasattr(torch.ops.aten, name)}
    with FlopCounterMode(display=False, custom_mapping=custom) as fc:
        with torch.inference_mode():
            model(*args, **kwargs)
    by_op = {str(k): int(v) for k, v in fc.get_flop_counts().get("Global", {}).items()}
    return int(fc.get_total_flops()), by_op


def sampling_inputs(cascade, n: int, w: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    from bench.prompts.shapes_set import shapes_prompts

    texts = [p.text for p in shapes_prompts(n, seed=1)]
    tokens, mask = cascade.text_encoder.encode(texts)
    return tokens, mask, torch.full((n,), float(w)), [1000 + i for i in range(n)]


def stage_forward_args(stage, tokens, mask, guided: bool) -> tuple[tuple, dict]:
    """The exact forward the sampler makes for one micro-batch of a stage (its ``StageConfig``): cond rows
    then uncond rows when guided."""
    b = tokens.shape[0]
    rows = 2 * b if guided else b
    size = stage.image_size
    x = torch.randn(rows, 3, size, size).contiguous(memory_format=torch.channels_last)
    t = torch.full((rows,), 0.5)
    tok, msk = (torch.cat([tokens, tokens]), torch.cat([mask, mask])) if guided else (tokens, mask)
    drop = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(rows - b, dtype=torch.bool)])
    kwargs: dict[str, Any] = {"drop_text": drop}
    if stage.kind == "sr":
        low = stage.lowres_size
        kwargs.update(lowres=torch.randn(rows, 3, low, low), aug_level=torch.zeros(rows))
    return (x, t, tok, msk), kwargs


def time_stages(cascade, tokens, mask, w, seeds, steps: int, sr_steps: int, sr_weight: float | None,
                kind: str = "ddim") -> list[float]:
    """Wall seconds of each stage while sampling one micro-batch (from per-step timestamps)."""
    stamps: list[float] = []
    t0 = time.perf_counter()
    cascade.sample(tokens, mask, w, seeds, steps=steps, sr_steps=sr_steps, kind=kind, thresholding="dynamic",
                   percentile=0.995, sr_weight=sr_weight, on_step=lambda i: stamps.append(time.perf_counter()))
    bounds = [t0, stamps[steps - 1]] + ([stamps[steps + sr_steps - 1]] if len(cascade.stages) > 1 else [])
    return [bounds[i + 1] - bounds[i] for i in range(len(bounds) - 1)]


def measure_mfu(cascade, micro_batch: int, steps: int, sr_steps: int, sr_weight: float | None, peak: dict,
                repeats: int) -> dict[str, Any]:
    """Base stage at w = 5 (cond + uncond rows); SR stages at ``sr_weight`` as the config samples them."""
    tokens, mask, w, seeds = sampling_inputs(cascade, micro_batch, w=5.0)
    runs = [time_stages(cascade, tokens, mask, w, seeds, steps, sr_steps, sr_weight) for _ in range(repeats + 1)][1:]
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
            "steps": n_steps, "guided": guided, "stage_seconds": secs, "forwards_per_second": fps, "achieved_gflops": achieved / 1e9,
            "images_per_second": micro_batch / median(secs)}
    return out


# ------------------------------------------------------------------------------------------------ sweep

def digests(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((run_dir / "images").rglob("*.png"))}


def chunk_counts(n_prompts: int, weights: tuple[float, ...], micro_batch: int) -> dict[str, int]:
    """Micro-batches and forward rows (cond + uncond) the sampler computes for one run."""
    import math

    w1 = sum(1 for w in weights if w == 1.0) * n_prompts
    guided = (len(weights) - (1 if 1.0 in weights else 0)) * n_prompts
    c1, cg = math.ceil(w1 / micro_batch), math.ceil(guided / micro_batch)
    return {"micro_batches": c1 + cg, "forward_rows": micro_batch * (c1 + 2 * cg),
            "needed_rows": w1 + 2 * guided}


def run_overrides(model_name: str, ckpt: dict[str, Path], text_cache: Path, n_prompts: int,
                  weights: tuple[float, ...], steps: int, sr_steps: int, micro_batch: int, threads: int,
                  metrics: bool) -> list[str]:
    """The ``bench.run`` overrides of one benchmark run (CLI arguments, or ``compose`` in process)."""
    return [f"model={model_name}", f"model.stages.0.checkpoint={ckpt['base']}",
            f"model.stages.1.checkpoint={ckpt['sr']}", f"model.text_encoder.cache_dir={text_cache}",
            f"prompts.n={n_prompts}", f"guidance.weights=[{','.join(f'{w:g}' for w in weights)}]",
            f"sampler.steps={steps}", f"sampler.sr_steps={sr_steps}", f"sampler.micro_batch={micro_batch}",
            "device=cpu", f"threads={threads}"] + ([] if metrics else ["metrics=none"])


def cli_run(overrides: list[str], run_dir: Path, log_file: Path) -> dict[str, Any]:
    """Wall seconds of one ``python -m bench.run`` process (interpreter start to exit), with the run's
    own per-phase wall times (``run_info.json``)."""
    t0 = time.perf_counter()
    with open(log_file, "w") as out:
        subprocess.run([sys.executable, "-m", "bench.run", *overrides, f"hydra.run.dir={run_dir}"], cwd=REPO,
                       check=True, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    phases = json.loads((run_dir / "run_info.json").read_text()).get("wall_time_s", {})
    return {"seconds": seconds, "phases_s": phases}


def metrics_rows_match(sweep_dir: Path, single_dirs: dict[float, Path]) -> bool:
    """Every row of each single-weight run's metrics.csv equals the sweep run's row for that weight."""
    import pandas as pd

    sweep = pd.read_csv(sweep_dir / "metrics.csv")
    for w, d in single_dirs.items():
        one = pd.read_csv(d / "metrics.csv").reset_index(drop=True)
        part = sweep[sweep["guidance_weight"] == w].reset_index(drop=True)
        try:
            pd.testing.assert_frame_equal(one, part)
        except AssertionError as e:
            log(f"WARNING: metrics of the w={w:g} run differ from the sweep's rows: {e}")
            return False
    return True


def measure_sweep(model_name: str, ckpt: dict[str, Path], work: Path, n_prompts: int, steps: int, sr_steps: int,
                  micro_batch: int, threads: int, cli: bool = True, metrics_overrides: tuple[str, ...] = (),
                  cli_repeats: int = 2) -> dict[str, Any]:
    """One run over K weights vs K single-weight runs (same prompts, steps, seeds).

    Headline (``gain``): wall clock of ``python -m bench.run`` processes with the default metrics, as
    a user runs them: one sweep process vs K single-weight processes, against reference statistics
    cached beforehand (neither side computes them); ``cli_repeats`` alternating rounds, each side's
    time its minimum over the rounds (per weight for the singles). Details: the same comparison inside one
    process with metrics off (``gain_in_process``: cascade load, text encoding, generation, manifest,
    report), and generation alone (``gain_generation_only``: micro-batch packing).
    """
    from bench.metrics.score_run import MetricsConfig, score_run
    from bench.run import run

    def cfg(weights: tuple[float, ...], text_cache: Path, n: int = n_prompts) -> dict:
        return compose(run_overrides(model_name, ckpt, text_cache, n, weights, steps, sr_steps, micro_batch,
                                     threads, metrics=False))

    # warm-up (not timed): first-call costs (imports of the report, kernel set-up for both micro-batch shapes)
    run(cfg((1.0, 2.0), work / "text-warmup", n=1), work / "warmup")
    t0 = time.perf_counter()
    info = run(cfg(SWEEP, work / "text-sweep"), work / "sweep")["info"]
    sweep_s = time.perf_counter() - t0
    singles = []
    for w in SWEEP:
        t0 = time.perf_counter()
        one = run(cfg((w,), work / "text-single"), work / f"single-w{w:g}")["info"]
        singles.append({"weight": w, "seconds": time.perf_counter() - t0,
                        "generation_s": one["wall_time_s"]["generation"]})
    merged: dict[str, str] = {}
    for w in SWEEP:
        merged.update(digests(work / f"single-w{w:g}"))
    swept = digests(work / "sweep")
    differ = sorted(k for k in swept if merged.get(k) != swept[k])
    identical = not differ and merged.keys() == swept.keys()
    max_pixel_diff = 0
    if not identical:  # recorded loudly, not fatal: the timings stay valid
        import numpy as np
        from PIL import Image

        log(f"WARNING: sweep and single-weight runs differ for {len(differ)} of {len(swept)} images: {differ[:4]}")
        for k in differ:
            single = work / f"single-{k.split('/')[1]}" / k
            if single.is_file():
                a = np.asarray(Image.open(work / "sweep" / k), dtype=np.int16)
                b = np.asarray(Image.open(single), dtype=np.int16)
                max_pixel_diff = max(max_pixel_diff, int(np.abs(a - b).max()))
    singles_s = sum(s["seconds"] for s in singles)
    sweep_chunks = chunk_counts(n_prompts, SWEEP, micro_batch)
    single_chunks = [chunk_counts(n_prompts, (w,), micro_batch) for w in SWEEP]
    in_process = {
        "gain_in_process": singles_s / sweep_s,
        "gain_generation_only": sum(s["generation_s"] for s in singles) / info["wall_time_s"]["generation"],
        "sweep_seconds": sweep_s, "sweep_generation_s": info["wall_time_s"]["generation"],
        "single_runs": singles, "singles_seconds": singles_s}
    out: dict[str, Any] = {
        "gain": None, **in_process,
        "images_byte_identical": identical, "images_differing": differ, "max_pixel_diff": max_pixel_diff,
        "num_images": len(merged), "weights": list(SWEEP),
        "prompts": n_prompts, "steps": steps, "sr_steps": sr_steps, "micro_batch": micro_batch,
        "sweep_micro_batches": sweep_chunks,
        "singles_micro_batches": {k: sum(c[k] for c in single_chunks) for k in sweep_chunks},
    }
    if not cli:
        out["gain"] = out["gain_in_process"]
        return out
    # reference statistics and everything derived from them (real-image baselines at these row sizes)
    # computed before either side is timed, into the cache both use
    text_cache = work / "text-cli"
    shutil.copytree(work / "text-sweep", text_cache)  # prompt embeddings already cached, for both sides alike
    args = lambda weights: run_overrides(model_name, ckpt, text_cache, n_prompts, weights, steps, sr_steps,  # noqa: E731
                                         micro_batch, threads, metrics=True) + list(metrics_overrides)
    score_run(work / "sweep", MetricsConfig.from_dict(compose(args(SWEEP))["metrics"]))
    sweep_runs: list[dict[str, Any]] = []
    single_runs: dict[float, list[dict[str, Any]]] = {w: [] for w in SWEEP}
    for r in range(cli_repeats):  # alternating sides, each in a fresh run directory
        sweep_runs.append(cli_run(args(SWEEP), work / f"cli{r}-sweep", work / f"cli{r}-sweep.log"))
        for w in SWEEP:
            single_runs[w].append(cli_run(args((w,)), work / f"cli{r}-single-w{w:g}", work / f"cli{r}-single-w{w:g}.log"))
    sweep_best = min(x["seconds"] for x in sweep_runs)
    singles_best = sum(min(x["seconds"] for x in runs) for runs in single_runs.values())
    out.update({
        "gain": singles_best / sweep_best,
        "cli_repeats": cli_repeats,
        "cli_sweep_seconds": sweep_best, "cli_singles_seconds": singles_best,
        "cli_sweep_runs": sweep_runs,
        "cli_single_runs": {f"{w:g}": runs for w, runs in single_runs.items()},
        "cli_metrics_rows_identical": metrics_rows_match(work / "cli0-sweep",
                                                         {w: work / f"cli0-single-w{w:g}" for w in SWEEP}),
        "cli_images_byte_identical": digests(work / "cli0-sweep") == swept,
    })
    return out


# ------------------------------------------------------------------------------------------------ peer

def measure_peer(cascade, n_images: int, steps: int, w: float, percentile: float, sr_weight: float | None,
                 sr_steps: int, forward_repeats: int, rounds: int = 2) -> dict[str, Any]:
    """Our cascade vs imagen-pytorch sampling the same number of images at the final size, same steps,
    guidance weight and dynamic thresholding, fed the same MiniLM text embeddings; the peer is one U-Net
    at the final size with about as many parameters as all our stages together.

    The headline ratio runs every one of our stages with the peer's ``steps`` and ``w``; ``settings`` adds
    the ratios with the SR stage at the config's ``sr_weight`` and/or ``sr_steps``, timed in the same rounds."""
    from imagen_pytorch_peer import PEER_PACKAGES, PeerSampler, count_params, import_imagen_pytorch, matched_unet
    from imagen_pytorch_peer import unet_forward

    dim_text = cascade.text_encoder.dim
    size = cascade.image_size
    ours_params = sum(count_params(st.model) for st in cascade.stages)
    tokens, mask, wv, seeds = sampling_inputs(cascade, n_images, w)
    t_import = time.perf_counter()
    ip = import_imagen_pytorch(dim_text)
    t_import = time.perf_counter() - t_import
    unet, dim, peer_params = matched_unet(ip, ours_params, dim_text)
    peer = PeerSampler.build(ip, unet, size, steps, dim_text, percentile)

    def ours(sr_w: float | None, sr_n: int) -> Callable[[], Any]:
        return lambda: cascade.sample(tokens, mask, wv, seeds, steps=steps, sr_steps=sr_n, kind="ddpm",
                                      thresholding="dynamic", percentile=percentile, sr_weight=sr_w)

    # our SR stage(s) at: (sr_weight, sr_steps); None = the base stage's w
    variants = {"every_stage_w_and_steps": (None, steps), "config_sr_weight": (sr_weight, steps),
                "config_sr_steps": (None, sr_steps), "config_sr_weight_and_steps": (sr_weight, sr_steps)}
    # alternating rounds (each of our variants, then the peer): this machine's speed drifts by tens of
    # percent over minutes, so each side's time is its minimum over the rounds
    ours_all: dict[str, list[float]] = {k: [] for k in variants}
    peer_all = []
    for r in range(rounds):
        for k, (sr_w, sr_n) in variants.items():
            ours_all[k] += timed(ours(sr_w, sr_n), repeats=1, warmup=1 if r == 0 else 0)
        images, t = peer.sample(tokens, mask, w)
        peer_all.append(t)
        assert images.shape == (n_images, 3, size, size) and torch.isfinite(images).all()
    peer_s = min(peer_all)
    ours_s, ours_cfg_s = ours_all["every_stage_w_and_steps"], ours_all["config_sr_weight"]
    settings = {k: {"sr_weight": "w" if sr_w is None else sr_w, "sr_steps": sr_n, "ours_seconds": ours_all[k],
                    "speedup": peer_s / min(ours_all[k])} for k, (sr_w, sr_n) in variants.items()}

    # forward level, same resolution: our base U-Net architecture at the final size vs a peer Unet of matched size
    base_arch = {**cascade.stages[0].cfg.arch, "image_size": size}
    ours_unet = randomised_stage("base", base_arch, 0).eval()
    f_unet, f_dim, f_params = matched_unet(ip, count_params(ours_unet), dim_text)
    f_unet.eval()
    b = 2 * n_images
    x = torch.randn(b, 3, size, size)
    tok2, mask2 = torch.cat([tokens, tokens]), torch.cat([mask, mask])
    with torch.inference_mode():
        ours_f = timed(lambda: ours_unet(x.contiguous(memory_format=torch.channels_last), torch.full((b,), 0.5),
                                         tok2, mask2), forward_repeats)
    with torch.no_grad():
        peer_f = timed(lambda: unet_forward(f_unet, x, tok2, mask2), forward_repeats)
    return {
        "speedup": peer_s / min(ours_s), "rounds": rounds, "peer_seconds_all": peer_all,
        "compared": (f"{n_images} images of {size}x{size}, {steps} ancestral (DDPM) steps per stage, w={w:g}, "
                     f"dynamic thresholding p={percentile}, the same MiniLM token embeddings, w at every stage: our {len(cascade.stages)}-"
                     f"stage cascade ({ours_params:,} parameters in all, cond+uncond in one forward) vs one "
                     f"imagen-pytorch Unet at {size}x{size} (shaped like our base U-Net, dim={dim}, {peer_params:,} "
                     "parameters; cond and uncond as two forwards, as imagen-pytorch does)"),
        "ours_seconds": ours_s, "ours_images_per_second": n_images / min(ours_s), "ours_params": ours_params,
        "speedup_with_config_sr_weight": peer_s / min(ours_cfg_s), "config_sr_weight": sr_weight,
        "ours_seconds_with_config_sr_weight": ours_cfg_s, "config_sr_steps": sr_steps, "settings": settings,
        "peer_seconds": peer_s, "peer_images_per_second": n_images / peer_s, "peer_params": peer_params,
        "peer_dim": dim, "peer_import_s": t_import, "peer_packages": list(PEER_PACKAGES),
        "forward_level": {
            "compared": (f"one forward at batch {b}, {size}x{size}: our base U-Net architecture "
                         f"({count_params(ours_unet):,} params) vs imagen-pytorch Unet dim={f_dim} ({f_params:,} params)"),
            "ours_seconds": ours_f, "peer_seconds": peer_f, "speedup": median(peer_f) / median(ours_f)},
    }


# ------------------------------------------------------------------------------------------------ metrics

@contextmanager
def timing_wrapper(module: Any, name: str, sink: list[float]) -> Iterator[None]:
    real = getattr(module, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            sink.append(time.perf_counter() - t0)

    setattr(module, name, wrapped)
    try:
        yield
    finally:
        setattr(module, name, real)


def measure_ref_cache(run_dir: Path, work: Path, quick: bool, repeats: int = 2) -> dict[str, Any]:
    """``score_run`` on one run, three ways, ``repeats`` times each with a fresh reference cache:

    - ``first``: nothing cached (no reference stats, no ``RUN/image_metrics.safetensors``);
    - ``second``: a repeat run, both caches filled (the headline ``speedup`` = first / second);
    - ``ref_only``: the reference cache filled but the run's image cache removed (what the images'
      own embedding and checking cost on top).

    Each time is the minimum over the repeats (the least-disturbed measurement on a shared machine);
    every table must be identical."""
    import pandas as pd

    from bench.metrics import refstats as rs
    from bench.metrics import score_run as sr
    from bench.metrics.image_cache import FILE

    times: dict[str, list[float]] = {"first": [], "second": [], "ref_only": []}
    parts: dict[str, list[dict]] = {k: [] for k in times}
    tables = []
    for r in range(repeats):
        kw: dict[str, Any] = dict(cache_dir=str(work / f"refcache{r}"), device="cpu")
        if quick:
            kw.update(QUICK_METRICS)
        cfg = sr.MetricsConfig(**kw)
        for side in times:
            if side != "second":
                (run_dir / FILE).unlink(missing_ok=True)
            ref_s: list[float] = []
            real_s: list[float] = []
            with timing_wrapper(rs, "load_or_compute", ref_s), timing_wrapper(sr, "shapes_real_features", real_s):
                t0 = time.perf_counter()
                tables.append(sr.score_run(run_dir, cfg))
                times[side].append(time.perf_counter() - t0)
            parts[side].append({"reference_stats_s": sum(ref_s), "fd_real_baseline_s": sum(real_s)})
    for t in tables[1:]:
        pd.testing.assert_frame_equal(tables[0], t)
    best = {k: min(v) for k, v in times.items()}
    ref_first = min(p["reference_stats_s"] for p in parts["first"])
    ref_second = min(p["reference_stats_s"] for p in parts["second"])
    return {"speedup": best["first"] / best["second"], "first_s": times["first"], "second_s": times["second"],
            "ref_cache_only_s": times["ref_only"], "ref_cache_only_speedup": best["first"] / best["ref_only"],
            "first_breakdown": parts["first"], "second_breakdown": parts["second"],
            "reference_stats_phase_speedup": ref_first / max(ref_second, 1e-9),
            "ref_n": cfg.ref_n, "num_images": int(tables[0].loc[tables[0]["category"] == "all", "num_images"].sum()),
            "tables_identical": True}


def measure_feature_throughput(resolution: int, n: int, batch_size: int, repeats: int) -> dict[str, Any]:
    """Images/s into Fréchet states: our extractor + FrechetStats.update vs torchmetrics'
    FrechetInceptionDistance.update with the same shapes-CLIP fd features as its custom feature module."""
    import random

    import numpy as np
    from torchmetrics.image.fid import FrechetInceptionDistance

    from bench.metrics.extractors import ShapesClipExtractor
    from bench.metrics.frechet import FrechetStats
    from bench.shapes import render_batch, sample_scene

    rng = random.Random("bench-features")
    images = torch.from_numpy(render_batch([sample_scene(rng) for _ in range(n)], resolution)).permute(0, 3, 1, 2)
    images = images.contiguous()
    batches = [images[i:i + batch_size] for i in range(0, n, batch_size)]
    ext = ShapesClipExtractor(None, "cpu", batch_size=batch_size, features="fd")
    ext.model.requires_grad_(False)  # frozen, as any feature extractor (torchmetrics does not freeze custom ones)

    class Feature(torch.nn.Module):
        num_features = ext.dim

        def __init__(self) -> None:
            super().__init__()
            self.net = ext.model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return ext.model.fd_features(x)

    def ours() -> FrechetStats:
        st = FrechetStats(ext.dim)
        for b in batches:
            st.update(ext(b))
        return st

    fid = FrechetInceptionDistance(feature=Feature(), normalize=False, reset_real_features=True)

    def theirs() -> None:
        fid.reset()
        for b in batches:
            fid.update(b, real=False)

    ours(), theirs()  # warm-up
    ours_s, theirs_s = [], []
    for _ in range(repeats):  # interleaved, so that both see the same machine state
        ours_s += timed(ours, 1, warmup=0)
        theirs_s += timed(theirs, 1, warmup=0)
    st = ours()
    theirs()
    diff = float(np.abs(st.sum / st.n - (fid.fake_features_sum / fid.fake_features_num_samples).numpy()).max())
    return {"speedup": median(theirs_s) / median(ours_s), "images": n, "resolution": resolution,
            "batch_size": batch_size, "extractor": ext.name, "ours_seconds": ours_s, "torchmetrics_seconds": theirs_s,
            "ours_images_per_second": n / median(ours_s), "torchmetrics_images_per_second": n / median(theirs_s),
            "max_abs_diff_of_feature_means": diff,
            "note": ("same module and batches; ours runs it under torch.inference_mode and accumulates float64 "
                     "numpy states, torchmetrics' update calls the module as is and accumulates float64 torch states")}


# ------------------------------------------------------------------------------------------------ profile

def profile_sampling(cascade, micro_batch: int, steps: int, sr_weight: float | None, top: int = 15
                     ) -> list[dict[str, Any]]:
    from torch.profiler import ProfilerActivity, profile

    tokens, mask, w, seeds = sampling_inputs(cascade, micro_batch, w=5.0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        cascade.sample(tokens, mask, w, seeds, steps=steps, sr_steps=steps, thresholding="dynamic", sr_weight=sr_weight)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return [{"op": e.key, "calls": int(e.count), "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 3),
             "self_cpu_pct": round(100.0 * e.self_cpu_time_total / total, 2),
             "cpu_total_ms": round(e.cpu_time_total / 1e3, 3)} for e in rows]


# ------------------------------------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of every measurement")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results.json"))
    p.add_argument("--skip-peer", action="store_true", help="leave out the imagen-pytorch comparison")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    threads = torch.get_num_threads()
    q = a.quick
    model = "imagen_tiny" if q else "imagen_base"
    defaults = compose([f"model={model}"])  # the sampler and guidance settings a run of this model uses
    smp, gd = defaults["sampler"], defaults["guidance"]
    size = dict(model=model, micro_batch=int(smp["micro_batch"]), steps=4 if q else int(smp["steps"]),
                sr_steps=3 if q else int(smp["sr_steps"] or smp["steps"]), sr_weight=gd["sr_weight"],
                repeats=2 if q else 3, matmul_n=512 if q else 2048, sweep_prompts=6 if q else 12, peer_images=8,
                peer_steps=4 if q else 25, feat_n=64 if q else 1024, profile_steps=2 if q else 5)
    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    work = Path(tempfile.mkdtemp(prefix="imagen-bench-benchmark-"))
    os.environ["IMAGEN_BENCH_CACHE"] = str(work / "cache")  # fresh caches: nothing reused from earlier runs
    results: dict[str, Any] = {"quick": q, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "settings": size}
    try:
        results["machine"] = machine_facts()
        ckpt, source = stage_files(size["model"], work / "ckpt")
        results["weights"] = source
        log(f"matmul peak ({size['matmul_n']}^3, {threads} threads)")
        peak = matmul_peak(size["matmul_n"], 5 if q else 10)
        cascade = load_cascade(size["model"], ckpt)
        log("MFU while sampling")
        mfu = measure_mfu(cascade, size["micro_batch"], size["steps"], size["sr_steps"], size["sr_weight"], peak,
                          size["repeats"])
        results["mfu"] = {k: v["mfu"] for k, v in mfu.items()}
        log("sweep batching")
        sweep = measure_sweep(size["model"], ckpt, work / "sweep", size["sweep_prompts"], size["steps"],
                              size["sr_steps"], size["micro_batch"], threads,
                              metrics_overrides=tuple(f"metrics.{k}={v}" for k, v in QUICK_METRICS.items()) if q else ())
        results["sweep_batching_gain"] = sweep["gain"]
        peer: dict[str, Any] = {"skipped": "--skip-peer"}
        if not a.skip_peer:
            log("imagen-pytorch")
            try:
                peer = measure_peer(cascade, size["peer_images"], size["peer_steps"], 5.0, 0.995, size["sr_weight"],
                                    size["sr_steps"], size["repeats"], rounds=1 if q else 2)
            except ImportError as e:
                peer = {"skipped": str(e)}
        results["speedup_vs_imagen_pytorch"] = peer.get("speedup")
        log("metrics: reference-stats cache")
        ref = measure_ref_cache(work / "sweep" / "sweep", work / "metrics", q)
        results["ref_stats_cache_speedup"] = ref["speedup"]
        log("metrics: feature extraction vs torchmetrics")
        feats = measure_feature_throughput(cascade.image_size, size["feat_n"], 64, size["repeats"])
        results["feature_extraction_speedup_vs_torchmetrics"] = feats["speedup"]
        log("profile")
        results["profile_top_ops"] = profile_sampling(cascade, size["micro_batch"], size["profile_steps"],
                                                      size["sr_weight"])
        results["details"] = {"matmul_peak": peak, "mfu": mfu, "sweep": sweep, "imagen_pytorch": peer,
                              "ref_stats_cache": ref, "feature_extraction": feats}
    except BaseException:
        log(f"failed; work files kept in {work}")
        raise
    shutil.rmtree(work, ignore_errors=True)
    wall = time.perf_counter() - wall0
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    results["machine"]["benchmark_wall_s"] = wall
    results["machine"]["benchmark_cpu_s"] = cpu_seconds() - cpu0
    results["machine"]["cpu_share"] = results["machine"]["benchmark_cpu_s"] / (wall * threads)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=float) + "\n")
    summary = {k: results.get(k) for k in ("quick", "mfu", "sweep_batching_gain", "speedup_vs_imagen_pytorch",
                                           "ref_stats_cache_speedup", "feature_extraction_speedup_vs_torchmetrics")}
    print(json.dumps(summary, indent=2, default=float))
    log(f"wrote {out} in {wall:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
