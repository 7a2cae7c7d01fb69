"""Any Python sampler as a ``Generator``: ``model=python model.target=package.module:function``.

The function is called once per micro-batch, all jobs at one guidance weight:

    def sample(prompts: list[str], seeds: list[int], guidance_weight: float, steps: int,
               resolution: int, **kwargs) -> images

``images``: uint8 (B, H, W, 3), floats in [0, 1] of that shape, or a list of B PIL images, with
H = W = ``resolution``. Image b must depend only on (prompts[b], seeds[b], guidance_weight, steps):
that is what makes it reproducible, resumable and comparable across guidance weights.
``kwargs`` are ``model.kwargs`` from the config.
"""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from bench.rundir import file_sha256

from .base import Job, as_uint8_images

REQUIRED = ("prompts", "seeds", "guidance_weight", "steps", "resolution")


def load_target(target: str) -> Callable[..., Any]:
    """``package.module:function`` -> the function; errors name the config key and what is wrong."""
    module_name, _, attr = str(target).partition(":")
    if not module_name or not attr:
        raise ValueError(f"model.target={target!r}: expected 'package.module:function'")
    try:
        module = importlib.import_module(module_name)  # the user's module, named in the config
    except ImportError as e:
        raise ValueError(f"model.target={target!r}: cannot import {module_name!r} ({e})") from e
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"model.target={target!r}: {module_name} has no function {attr!r}")
    params = inspect.signature(fn).parameters
    takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in params.values())
    missing = [p for p in REQUIRED if p not in params and not takes_kwargs]
    if missing:
        raise ValueError(f"model.target={target!r}: the function lacks the arguments {missing}; "
                         f"expected {attr}({', '.join(REQUIRED)}, **kwargs)")
    return fn


class PythonGenerator:
    def __init__(self, target: str, resolution: int, steps: int, kwargs: dict[str, Any] | None = None) -> None:
        if not isinstance(resolution, int) or resolution < 1:
            raise ValueError(f"model.resolution={resolution!r}: give the size (pixels) of the images "
                             "model.target returns")
        self.target, self.fn = target, load_target(target)
        self.image_size, self.steps, self.kwargs = resolution, steps, dict(kwargs or {})
        self.random_weights = False
        source = inspect.getsourcefile(self.fn)
        self._source_sha = file_sha256(source)[:16] if source and Path(source).is_file() else "unknown"

    @classmethod
    def from_config(cls, model: dict[str, Any], sampler: dict[str, Any]) -> "PythonGenerator":
        if not model.get("target"):
            raise ValueError("model=python needs model.target=package.module:function")
        res = model.get("resolution")
        return cls(str(model["target"]), int(res) if res is not None else res, int(sampler["steps"]),
                   model.get("kwargs"))

    def identity(self) -> dict[str, Any]:
        return {"kind": "python", "target": self.target, "source_sha256": self._source_sha}

    def info(self) -> dict[str, Any]:
        return {"kind": "python", "target": self.target, "source_sha256": self._source_sha, "kwargs": self.kwargs}

    def prepare(self, prompts: Sequence[str]) -> None:
        pass

    def batch_group(self, job: Job) -> Any:
        return job.guidance_weight  # one scalar weight per call

    def __call__(self, jobs: Sequence[Job]) -> np.ndarray:
        out = self.fn(prompts=[j.prompt for j in jobs], seeds=[j.seed for j in jobs],
                      guidance_weight=jobs[0].guidance_weight, steps=self.steps, resolution=self.image_size,
                      **self.kwargs)
        return as_uint8_images(out, len(jobs), self.image_size, f"model.target={self.target}")
