"""Helpers shared by the benchmark's measurements: logging and timing, machine facts, the Hydra config
of ``conf/``, the checkpoints the benchmark samples with, the cascade, and the exact forward the
sampler makes for one micro-batch. Importing this module changes no environment variable and not
``sys.path``; ``offline_env()`` sets the offline defaults, called by each entry point's ``main()``."""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import OmegaConf

from bench.prompts.shapes_set import shapes_prompts
from bench.runinfo import git_revision
from imagen.cascade import Cascade, StageConfig
from imagen.checkpoint import CheckpointError, build_stage, load_stage, save_stage
from imagen.device import BF16_FLAGS
from imagen.text_encoder import TextEncoderConfig

REPO = Path(__file__).resolve().parents[1]
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")  # what fp32 / bf16 peaks depend on
QUICK_METRICS = {"ref_n": 200, "bootstrap": 100, "fd_bootstrap": 10, "kid_subsets": 10}  # --quick metric settings
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def offline_env() -> None:
    """Offline defaults for the Hugging Face libraries (as ``make`` exports them); set values are kept."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


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


def forward_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of the per-forward before/after scripts (``--threads``, ``--repeats``); sets the threads."""
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--repeats", type=int, default=20, help="timed rounds after two warm-up rounds")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    return a


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpuinfo_field(name: str, text: str | None = None) -> list[str]:
    """Every value of ``name`` in /proc/cpuinfo (one per logical CPU); [] where it cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text() if text is None else text
    except OSError:
        return []
    return [line.split(":", 1)[1].strip() for line in text.splitlines()
            if ":" in line and line.split(":", 1)[0].strip() == name]


def cpu_features(text: str | None = None) -> dict[str, bool]:
    """The CPU flags of ``CPU_FEATURES`` (from /proc/cpuinfo ``flags``; all False where unreadable)."""
    flags = set((cpuinfo_field("flags", text) or [""])[0].split())
    return {f: f in flags for f in CPU_FEATURES}


def bf16_support(features: dict[str, bool]) -> str:
    if any(features.get(f) for f in BF16_FLAGS):
        return ("native (avx512_bf16 / amx_bf16): model.dtype=auto samples in bf16 here (benchmarks/bf16.py); "
                "the benchmark samples in fp32")
    return "emulated (no avx512_bf16 / amx_bf16): bf16 would be slower than fp32 here; model.dtype=auto stays fp32"


def machine_facts() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    features = cpu_features()
    return {"cpu_count": os.cpu_count(), "cpus_usable": usable, "cpu_model": cpu_model(),
            "cpu_features": features, "bf16": bf16_support(features),
            "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
            "mkldnn": torch.backends.mkldnn.is_available(), "python": platform.python_version(),
            "platform": platform.platform(), "git_revision": git_revision(REPO),
            "loadavg_start": list(os.getloadavg()), "nice": os.nice(0)}


# ------------------------------------------------------------------------------------------------ conf/

def compose(overrides: list[str]) -> dict[str, Any]:
    """The project's Hydra config (``conf/config.yaml``) with ``overrides``, resolved to plain containers."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return OmegaConf.to_container(hydra_compose(config_name="config", overrides=overrides), resolve=True)


@dataclass(frozen=True)
class Guidance:
    """The guidance settings the benchmark samples with, read from ``conf/guidance``: the sweep's weights
    (``guidance=sweep``), the one weight ``w`` of the single-weight measurements (``guidance=single``),
    and the thresholding and SR-stage weight of a run (``guidance=sweep``, the default)."""

    weights: tuple[float, ...]
    w: float
    thresholding: str
    percentile: float
    sr_weight: float | None


def guidance_settings() -> Guidance:
    sweep = compose(["guidance=sweep"])["guidance"]
    (w,) = compose(["guidance=single"])["guidance"]["weights"]
    sr_weight = sweep["sr_weight"]
    return Guidance(weights=tuple(float(x) for x in sweep["weights"]), w=float(w),
                    thresholding=str(sweep["thresholding"]), percentile=float(sweep["percentile"]),
                    sr_weight=None if sr_weight is None else float(sr_weight))


# ------------------------------------------------------------------------------------------------ cascade

def randomised_stage(kind: str, arch: dict, seed: int) -> torch.nn.Module:
    """A stage with random but non-degenerate weights (zero-initialised output layers would ignore the text)."""
    torch.manual_seed(seed)
    model = build_stage(kind, arch)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def shipped_stage(st: dict, dst: Path) -> str | None:
    """Copies the stage's shipped checkpoint to ``dst``; its description, or None when missing or unusable."""
    src = REPO / st["checkpoint"] if st.get("checkpoint") else None
    if src is None or not src.is_file():
        return None
    shutil.copy(src, dst)
    try:
        _, meta = load_stage(dst)
    except CheckpointError as e:
        log(f"{src} unusable ({e}); using random weights")
        return None
    return f"{st['kind']}: {st['checkpoint']} (train_steps {meta.get('train_steps')})"


def stage_files(model_name: str, out: Path) -> tuple[dict[str, Path], str]:
    """Checkpoints the benchmark samples with, copied to ``out`` (training may overwrite the shipped ones):
    the shipped ones when present and loadable, else random non-degenerate weights of the config's architecture."""
    cfg = compose([f"model={model_name}"])["model"]
    paths, sources = {}, []
    out.mkdir(parents=True, exist_ok=True)
    for i, st in enumerate(cfg["stages"]):
        dst = out / f"{st['kind']}.safetensors"
        paths[st["kind"]] = dst
        source = shipped_stage(st, dst)
        if source is None:
            model = randomised_stage(st["kind"], st["arch"], i)
            save_stage(model, dst, st["kind"], dtype=torch.float32, prediction=st["prediction"],
                       image_size=st["image_size"], lowres_size=st["lowres_size"])
            source = f"{st['kind']}: random non-degenerate weights, arch of conf/model/{model_name}.yaml"
        sources.append(source)
    return paths, "; ".join(sources)


def load_cascade(model_name: str, ckpt: dict[str, Path], max_length: int | None = None) -> Cascade:
    cfg = compose([f"model={model_name}"])["model"]
    stages = [StageConfig(**{**st, "checkpoint": str(ckpt[st["kind"]])}) for st in cfg["stages"]]
    te = TextEncoderConfig(**{**cfg["text_encoder"], **({"max_length": max_length} if max_length else {})})
    return Cascade.load(stages, te, device="cpu", allow_random=False)


def sampling_inputs(cascade: Cascade, n: int, w: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    texts = [p.text for p in shapes_prompts(n, seed=1)]
    tokens, mask = cascade.text_encoder.encode(texts)
    return tokens, mask, torch.full((n,), float(w)), [1000 + i for i in range(n)]


def stage_forward_args(stage: StageConfig, tokens: torch.Tensor, mask: torch.Tensor, guided: bool
                       ) -> tuple[tuple, dict]:
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
