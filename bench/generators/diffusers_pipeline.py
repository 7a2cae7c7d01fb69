"""Any diffusers text-to-image pipeline as a ``Generator``: ``model=diffusers model.path=DIR``.

Loaded from local files only (``local_files_only=True``: never the hub). ``guidance.weights`` map to
``guidance_scale`` (diffusers and the Imagen paper share the convention: w = 1 is no guidance) and
``sampler.steps`` to ``num_inference_steps``. Each image gets its own CPU ``torch.Generator`` seeded by
the harness, and every call has the same micro-batch shape, so an image does not depend on batch size,
sweep or resume.

A DeepFloyd IF cascade (the open Imagen-style model) is ``model.path=[STAGE1_DIR,STAGE2_DIR]``:
``IFPipeline`` makes the low-resolution image, ``IFSuperResolutionPipeline`` upsamples it with
``sampler.sr_steps`` steps at ``guidance.sr_weight`` (null: the same w) and noise level
``model.sr_noise_level`` (IF's default 250 of 1000: noise conditioning augmentation, paper 2.5).
Prompts reach IF as written (``clean_caption=False``: IF's optional caption cleaning depends on
which packages are installed, so it would make images depend on the environment).
"""
from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import diffusers
import numpy as np
import torch

from imagen.device import resolve_device

from .base import Job, as_uint8_images, folder_digest

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
TEXT_TO_IMAGE = ("prompt", "guidance_scale", "num_inference_steps", "generator")


@dataclass(frozen=True)
class DiffusersSettings:
    """The ``model``, ``sampler`` and ``guidance`` keys a diffusers run takes."""

    paths: tuple[str, ...]
    resolution: int | None = None
    scheduler: str | None = None
    dtype: str = "float32"
    negative_prompt: str = ""
    steps: int = 25
    sr_steps: int | None = None
    sr_weight: float | None = None
    sr_noise_level: int = 250


def _stage_seed(seed: int, stage: int) -> int:
    """Stage 2's noise seed: independent of stage 1's, a function of the image's seed only."""
    return int.from_bytes(hashlib.sha256(f"{seed}:stage{stage}".encode()).digest()[:8], "little") & (2**63 - 1)


def _generators(seeds: Sequence[int]) -> list[torch.Generator]:
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def _params(pipe: Any) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(pipe.__call__).parameters)


def _as_written(pipe: Any) -> dict[str, Any]:
    """``clean_caption=False`` for pipelines that would rewrite prompts (IF), depending on installed packages."""
    return {"clean_caption": False} if "clean_caption" in _params(pipe) else {}


def check_pipeline(pipe: Any, path: str, needs: Sequence[str], refuses: Sequence[str] = ()) -> None:
    """Fail at load, naming the pipeline class and what is missing, for a pipeline the harness cannot drive."""
    params = _params(pipe)
    name = type(pipe).__name__
    missing = [p for p in needs if p not in params]
    if missing:
        raise ValueError(f"{path}: {name} lacks the argument(s) {missing} of its __call__ that the harness needs "
                         "(a text-to-image pipeline takes prompt, guidance_scale, num_inference_steps, generator)")
    extra = [p for p in refuses if p in params]
    if extra:
        raise ValueError(f"{path}: {name} is not a text-to-image pipeline: its __call__ takes {extra} "
                         "(image-to-image, inpainting and super-resolution pipelines need an input image)")


def load_pipeline(path: str, dtype: str, scheduler: str | None, device: torch.device) -> Any:
    """A pipeline saved with ``save_pretrained``, from local files only, with an optional scheduler swap."""
    if dtype not in DTYPES:
        raise ValueError(f"model.dtype={dtype!r}: expected one of {sorted(DTYPES)}")
    if not Path(path).is_dir():
        raise FileNotFoundError(f"model.path={path}: no such folder (a pipeline saved with save_pretrained)")
    pipe = diffusers.DiffusionPipeline.from_pretrained(path, local_files_only=True, torch_dtype=DTYPES[dtype])
    if scheduler:
        cls = getattr(diffusers, scheduler, None)
        if cls is None or not hasattr(cls, "from_config"):
            raise ValueError(f"model.scheduler={scheduler!r}: not a diffusers scheduler class")
        pipe.scheduler = cls.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


class DiffusersGenerator:
    """One pipeline, or an IF-style cascade of two (text-to-image, then super-resolution)."""

    def __init__(self, s: DiffusersSettings, device: str = "auto") -> None:
        if not s.paths or len(s.paths) > 2:
            raise ValueError(f"model.path: one pipeline folder or [stage1, stage2], got {list(s.paths)}")
        self.s, self.device = s, resolve_device(device)
        self.stages = [load_pipeline(p, s.dtype, s.scheduler, self.device) for p in s.paths]
        check_pipeline(self.stages[0], s.paths[0], TEXT_TO_IMAGE + (("height", "width") if s.resolution else ()),
                       refuses=("image", "mask_image"))
        if len(self.stages) == 2:
            check_pipeline(self.stages[1], s.paths[1], TEXT_TO_IMAGE + ("image",))
        self.image_size = s.resolution or self._default_size()
        self.random_weights = False
        self._digests = [folder_digest(p) for p in s.paths]

    @classmethod
    def from_config(cls, model: dict[str, Any], sampler: dict[str, Any], guidance: dict[str, Any],
                    device: str = "auto") -> "DiffusersGenerator":
        path = model.get("path")
        if not path:
            raise ValueError("model=diffusers needs model.path=DIR (or [STAGE1_DIR,STAGE2_DIR])")
        paths = tuple(str(p) for p in (path if isinstance(path, (list, tuple)) else [path]))
        sr_w = guidance.get("sr_weight")
        return cls(DiffusersSettings(paths, model.get("resolution"), model.get("scheduler"),
                                     str(model.get("dtype", "float32")), str(model.get("negative_prompt") or ""),
                                     int(sampler["steps"]), sampler.get("sr_steps"),
                                     None if sr_w is None else float(sr_w), int(model.get("sr_noise_level", 250))),
                   device)

    def _default_size(self) -> int:
        last = self.stages[-1]
        unet = getattr(last, "unet", None) or getattr(last, "transformer", None)
        sample = getattr(getattr(unet, "config", None), "sample_size", None)
        if sample is None:
            raise ValueError(f"{self.s.paths[-1]}: cannot tell the pipeline's image size; set model.resolution")
        sample = sample[0] if isinstance(sample, (list, tuple)) else sample
        return int(sample) * int(getattr(last, "vae_scale_factor", 1) if hasattr(last, "vae") else 1)

    def identity(self) -> dict[str, Any]:
        ident: dict[str, Any] = {"kind": "diffusers", "dtype": self.s.dtype, "image_size": self.image_size}
        for i, (pipe, digest) in enumerate(zip(self.stages, self._digests)):
            ident[f"stage{i}_class"] = type(pipe).__name__
            ident[f"stage{i}_scheduler"] = type(pipe.scheduler).__name__
            ident[f"stage{i}_sha256"] = digest
        return ident

    def info(self) -> dict[str, Any]:
        return {"kind": "diffusers", "device": str(self.device), "dtype": self.s.dtype,
                "stages": [{"kind": type(p).__name__, "checkpoint": path, "sha256": d, "random_init": False,
                            "scheduler": type(p.scheduler).__name__, "image_size": self.image_size if i else None}
                           for i, (p, path, d) in enumerate(zip(self.stages, self.s.paths, self._digests))]}

    def prepare(self, prompts: Sequence[str]) -> None:
        pass

    def batch_group(self, job: Job) -> Any:
        return job.guidance_weight  # guidance_scale is one scalar per pipeline call

    def __call__(self, jobs: Sequence[Job]) -> np.ndarray:
        prompts, seeds, w = [j.prompt for j in jobs], [j.seed for j in jobs], float(jobs[0].guidance_weight)
        neg = [self.s.negative_prompt] * len(jobs) if self.s.negative_prompt else None
        common = dict(guidance_scale=w, num_inference_steps=self.s.steps, generator=_generators(seeds))
        if len(self.stages) == 1:
            size = dict(height=self.s.resolution, width=self.s.resolution) if self.s.resolution else {}
            out = self.stages[0](prompt=prompts, negative_prompt=neg, output_type="np", **size, **common,
                                 **_as_written(self.stages[0])).images
        else:
            out = self._cascade(prompts, neg, seeds, w, common)
        return as_uint8_images(out, len(jobs), self.image_size, f"{type(self.stages[-1]).__name__} at {self.s.paths[-1]}")

    def _cascade(self, prompts: list[str], neg: list[str] | None, seeds: list[int], w: float,
                 common: dict[str, Any]) -> np.ndarray:
        """IF: stage 1 at w (its [-1, 1] output as a tensor), stage 2 at sr_weight with its own seeds."""
        first, second = self.stages
        low = first(prompt=prompts, negative_prompt=neg, output_type="pt", clean_caption=False, **common).images
        w2 = w if self.s.sr_weight is None else self.s.sr_weight
        text: dict[str, Any] = {"prompt": prompts, "negative_prompt": neg, **_as_written(second)}
        if getattr(second, "text_encoder", None) is None:  # IF stage II ships without T5: stage I encodes
            emb, neg_emb = first.encode_prompt(prompts, do_classifier_free_guidance=w2 > 1, negative_prompt=neg,
                                               clean_caption=False)
            text = {"prompt_embeds": emb, "negative_prompt_embeds": neg_emb}
        out = second(image=low, guidance_scale=w2, num_inference_steps=self.s.sr_steps or self.s.steps,
                     generator=_generators([_stage_seed(s, 1) for s in seeds]), noise_level=self.s.sr_noise_level,
                     output_type="np", **text)
        return out.images
