"""The cascade: a text-conditional base stage followed by super-resolution stages.

``Cascade.sample`` runs one fixed-shape micro-batch through every stage. Each image has its
own seed, and each stage draws its noise from a generator derived from (seed, stage), so an
image depends only on its seed, prompt and settings, never on its batch neighbours
(forwards always run at the same micro-batch shape; see ``bench.generate``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .checkpoint import CheckpointError, build_stage, load_stage
from .device import resolve_device, resolve_dtype
from .noise import per_row_randn
from .sampler import SamplerKind, sample
from .schedule import Grid, q_sample
from .text_encoder import TextEncoder, TextEncoderConfig
from .thresholding import Thresholding

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class StageConfig:
    kind: str                              # base | sr
    arch: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    prediction: str = "v"
    image_size: int = 64
    lowres_size: int = 0


@dataclass
class Stage:
    model: torch.nn.Module
    cfg: StageConfig
    random_init: bool
    info: dict[str, Any]


def resolve_path(p: str) -> Path:
    """Absolute, relative to the working directory, or else relative to the repository."""
    path = Path(p).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return REPO_ROOT / path


def stage_seed(seed: int, stage: int, stream: str = "") -> int:
    """A 63-bit seed for (image seed, stage, stream), independent across stages and streams."""
    words = [seed & 0xFFFFFFFF, seed >> 32, stage] + [ord(c) for c in stream]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def generators(seeds: Sequence[int], stage: int, stream: str) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(stage_seed(s, stage, stream)) for s in seeds]


class Cascade:
    def __init__(self, stages: list[Stage], text_encoder: TextEncoder, device: torch.device,
                 dtype: str = "float32"):
        if not stages or stages[0].cfg.kind != "base":
            raise ValueError("a cascade starts with a base stage")
        self.stages, self.text_encoder, self.device = stages, text_encoder, device
        self.dtype = resolve_dtype(dtype, device)  # model.dtype: "float32" or "bfloat16" (autocast in sample)

    @property
    def random_init(self) -> bool:
        return any(s.random_init for s in self.stages)

    @property
    def image_size(self) -> int:
        return self.stages[-1].cfg.image_size

    @classmethod
    def load(cls, stages: list[StageConfig], text_encoder: TextEncoderConfig, device: str = "auto",
             allow_random: bool = True, dtype: str = "float32") -> "Cascade":
        dev = resolve_device(device)
        built = []
        for i, sc in enumerate(stages):
            path = resolve_path(sc.checkpoint) if sc.checkpoint else None
            if path is not None and path.exists():
                model, meta = load_stage(path, dev)
                if meta["kind"] != sc.kind:
                    raise CheckpointError(f"{path}: a {meta['kind']!r} stage where the config expects {sc.kind!r}")
                sc = StageConfig(sc.kind, meta["arch"], str(path), meta.get("prediction", sc.prediction),
                                 meta.get("image_size", sc.image_size), meta.get("lowres_size", sc.lowres_size))
                built.append(Stage(model, sc, False, meta))
            else:
                if not allow_random:
                    raise CheckpointError(f"stage {i} ({sc.kind}): checkpoint {sc.checkpoint!r} not found")
                torch.manual_seed(i)
                model = build_stage(sc.kind, sc.arch).to(dev).eval()
                log.warning("RANDOM WEIGHTS: stage %d (%s) has no checkpoint (%s); images are noise-like",
                            i, sc.kind, sc.checkpoint or "none configured")
                built.append(Stage(model, sc, True, {}))
        encoder = TextEncoder(text_encoder, dev)
        check_compatible(built, encoder)
        for s in built:
            s.model.to(memory_format=torch.channels_last)
        return cls(built, encoder, dev, dtype)

    def sample(self, tokens: torch.Tensor, mask: torch.Tensor, w: torch.Tensor, seeds: Sequence[int], *,
               steps: int = 25, kind: SamplerKind = "ddim", grid: Grid = "time",
               thresholding: Thresholding = "dynamic",
               percentile: float = 0.995, sr_steps: int | None = None, sr_weight: float | None = None,
               aug_level: float = 0.0, interval: tuple[float, float] | None = None, on_step=None) -> torch.Tensor:
        """Images in [-1, 1] at the last stage's size, one per row of ``tokens``.

        ``w`` is the base stage's per-row guidance weight; SR stages use ``sr_weight`` (None:
        the same w). ``aug_level`` is the noise-conditioning-augmentation level at which SR
        stages see the low-res image (paper section 2.5). ``kind``, ``grid`` (the time grid) and ``interval``
        (guidance only at t in it; None: at every step) apply to every stage; the run config's defaults are in
        conf/sampler/ and conf/guidance/, these are the function's. The U-Net forwards run in the cascade's
        ``dtype`` (autocast), everything else in float32.
        """
        dev = self.device
        tokens, mask, w = tokens.to(dev), mask.to(dev), w.to(dev)
        with torch.autocast(dev.type, dtype=getattr(torch, self.dtype), enabled=self.dtype != "float32"):
            return self._sample(tokens, mask, w, seeds, steps, kind, grid, thresholding, percentile, sr_steps,
                                sr_weight, aug_level, interval, on_step)

    def _sample(self, tokens, mask, w, seeds, steps, kind, grid, thresholding, percentile, sr_steps, sr_weight,
                aug_level, interval, on_step) -> torch.Tensor:
        dev, x = self.device, None
        for i, st in enumerate(self.stages):
            size = st.cfg.image_size
            shape = (3, size, size)
            x_T = per_row_randn(generators(seeds, i, "x_T"), shape, dev).contiguous(memory_format=torch.channels_last)
            gens = generators(seeds, i, "ddpm")
            if st.cfg.kind == "base":
                x = sample(st.model, x_T, tokens, mask, w, steps=steps, kind=kind, grid=grid,
                           prediction=st.cfg.prediction, thresholding=thresholding, percentile=percentile,
                           generators=gens, on_step=on_step, interval=interval)
            else:
                level = torch.full((x.shape[0],), float(aug_level), device=dev)
                lowres = q_sample(x, level, per_row_randn(generators(seeds, i, "aug"), x.shape[1:], dev))
                w_sr = w if sr_weight is None else torch.full_like(w, float(sr_weight))
                x = sample(st.model, x_T, tokens, mask, w_sr, steps=sr_steps or steps, kind=kind, grid=grid,
                           prediction=st.cfg.prediction, thresholding=thresholding, percentile=percentile,
                           generators=gens, lowres=lowres, aug_level=level, on_step=on_step, interval=interval)
        return x


def check_compatible(stages: list[Stage], encoder: TextEncoder) -> None:
    """Each stage's input size is the previous stage's output size, and every stage reads tokens of the
    encoder's width; a mismatch raises ``CheckpointError`` naming the config key (it would otherwise
    fail deep inside a forward, or not at all)."""
    for i, st in enumerate(stages):
        src = st.cfg.checkpoint if not st.random_init else f"model.stages.{i}.arch"
        text_dim = st.cfg.arch.get("text_dim")
        if encoder.dim is not None and text_dim is not None and int(text_dim) != encoder.dim:
            raise CheckpointError(
                f"{src}: stage {i} ({st.cfg.kind}) reads {text_dim}-d text tokens, but the text encoder "
                f"{encoder.id} gives {encoder.dim}-d (model.stages.{i}.checkpoint vs model.text_encoder)")
        trained_with = st.info.get("text_encoder")
        if trained_with and trained_with != encoder.id:
            log.warning("%s: stage %d was trained with text encoder %s, sampling uses %s", src, i, trained_with,
                        encoder.id)
        if i > 0 and st.cfg.lowres_size != stages[i - 1].cfg.image_size:
            prev = stages[i - 1]
            raise CheckpointError(
                f"{src}: stage {i} ({st.cfg.kind}) takes {st.cfg.lowres_size}x{st.cfg.lowres_size} input, but stage "
                f"{i - 1} ({prev.cfg.checkpoint or 'random'}) makes {prev.cfg.image_size}x{prev.cfg.image_size} "
                f"images (model.stages.{i - 1} / model.stages.{i})")


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] NCHW float -> uint8 NHWC (round half away from zero after clamping)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()
