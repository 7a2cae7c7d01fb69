"""The built-in Imagen cascade (``imagen/``) as a ``Generator``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from bench.rundir import file_sha256
from imagen.cascade import Cascade, StageConfig, to_uint8
from imagen.text_encoder import TextEncoderConfig

from .base import Job, NonFiniteSampleError


@dataclass
class SamplerSettings:
    """``sampler`` and ``guidance`` keys of the run config that the cascade's sampler takes."""

    steps: int = 25
    kind: str = "ddim"
    grid: str = "time"            # time grid of both stages: time | logsnr (imagen.schedule.time_grid)
    thresholding: str = "dynamic"
    percentile: float = 0.995
    sr_steps: int | None = None
    sr_weight: float | None = None
    aug_level: float = 0.0
    interval: tuple[float, float] | None = None   # guidance.interval: guidance only at t in [t_lo, t_hi]


class CascadeGenerator:
    """Samples every row of a micro-batch in one cascade call: cond and uncond rows share each forward,
    rows with w = 1 skip the unconditional pass (so the harness keeps them apart: ``batch_group``)."""

    def __init__(self, cascade: Cascade, settings: SamplerSettings) -> None:
        self.cascade, self.settings = cascade, settings
        self.image_size = cascade.image_size
        self.random_weights = cascade.random_init
        self._digests = [None if st.random_init else file_sha256(st.cfg.checkpoint) for st in cascade.stages]

    @classmethod
    def from_config(cls, model: dict[str, Any], settings: SamplerSettings, device: str = "auto") -> "CascadeGenerator":
        cascade = Cascade.load([StageConfig(**st) for st in model["stages"]], TextEncoderConfig(**model["text_encoder"]),
                               device=device, dtype=str(model.get("dtype", "float32")))
        return cls(cascade, settings)

    @property
    def dtype(self) -> str:
        """The resolved compute dtype (model.dtype=auto: bfloat16 or float32 by CPU)."""
        return self.cascade.dtype

    def identity(self) -> dict[str, Any]:
        ident: dict[str, Any] = {"kind": "imagen", "text_encoder": self.cascade.text_encoder.id}
        for i, d in enumerate(self._digests):
            ident[f"stage{i}_sha256"] = d or "random"
        if self.cascade.dtype != "float32":  # float32 runs keep the identity they had before model.dtype existed
            ident["dtype"] = self.cascade.dtype
        return ident

    def info(self) -> dict[str, Any]:
        return {"kind": "imagen", "device": str(self.cascade.device), "dtype": self.cascade.dtype,
                "text_encoder": self.cascade.text_encoder.id,
                "truncated_prompts": len(self.cascade.text_encoder.truncated),
                "stages": [{"kind": st.cfg.kind, "checkpoint": st.cfg.checkpoint, "random_init": st.random_init,
                            "sha256": d, "train_steps": st.info.get("train_steps"), "image_size": st.cfg.image_size}
                           for st, d in zip(self.cascade.stages, self._digests)]}

    def prepare(self, prompts: Sequence[str]) -> None:
        if prompts:
            self.cascade.text_encoder.encode(sorted(set(prompts)))  # fills the embedding cache once

    def batch_group(self, job: Job) -> Any:
        return 0 if job.guidance_weight == 1.0 else 1  # unguided rows (no uncond pass) first, apart

    def __call__(self, jobs: Sequence[Job]) -> np.ndarray:
        s = self.settings
        tokens, mask = self.cascade.text_encoder.encode([j.prompt for j in jobs])
        w = torch.tensor([j.guidance_weight for j in jobs], dtype=torch.float32)
        x = self.cascade.sample(tokens, mask, w, [j.seed for j in jobs], steps=s.steps, kind=s.kind, grid=s.grid,
                                thresholding=s.thresholding, percentile=s.percentile, sr_steps=s.sr_steps,
                                sr_weight=s.sr_weight, aug_level=s.aug_level, interval=s.interval)
        finite = torch.isfinite(x.flatten(1)).all(1)
        if not bool(finite.all()):
            row = int((~finite).nonzero()[0])
            raise NonFiniteSampleError("non-finite pixels sampled", row)
        return to_uint8(x)
