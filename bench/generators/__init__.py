"""Generators under test: the built-in cascade, any diffusers pipeline, any Python sampler.

``build_generator(cfg)`` reads the run config's ``model`` group: ``kind`` (absent: the built-in
``imagen`` cascade), ``diffusers`` (``model.path``) or ``python`` (``model.target``).
"""
from __future__ import annotations

from typing import Any

from imagen.sampler import check_kind
from imagen.schedule import check_grid

from .base import Generator, Job, NonFiniteSampleError, as_uint8_images, folder_digest
from .cascade import CascadeGenerator, SamplerSettings
from .diffusers_pipeline import DiffusersGenerator, DiffusersSettings
from .python_callable import PythonGenerator

__all__ = ["CascadeGenerator", "DiffusersGenerator", "DiffusersSettings", "Generator", "Job", "NonFiniteSampleError",
           "PythonGenerator", "SamplerSettings", "as_uint8_images", "build_generator", "folder_digest",
           "model_kind"]


def model_kind(model: dict[str, Any]) -> str:
    return str(model.get("kind", "imagen"))


def guidance_interval(value: Any) -> tuple[float, float] | None:
    """``guidance.interval``: null, or [t_lo, t_hi] with 0 <= t_lo < t_hi <= 1 (ValueError otherwise)."""
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"guidance.interval: expected null or [t_lo, t_hi], got {value!r}") from None
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"guidance.interval: expected 0 <= t_lo < t_hi <= 1, got [{lo:g}, {hi:g}]")
    return lo, hi


def sampler_settings(cfg: dict[str, Any]) -> SamplerSettings:
    g, s = cfg["guidance"], cfg["sampler"]
    try:  # refused before generation.json is written
        grid = check_grid(str(s.get("grid", "time")))
    except ValueError as e:
        raise ValueError(f"sampler.grid: {e}") from None
    try:
        kind = check_kind(str(s["kind"]))
    except ValueError as e:
        raise ValueError(f"sampler.kind: {e}") from None
    return SamplerSettings(steps=int(s["steps"]), kind=kind, grid=grid, thresholding=g["thresholding"],
                           percentile=float(g["percentile"]), sr_steps=s.get("sr_steps"),
                           sr_weight=g.get("sr_weight"), aug_level=float(s.get("aug_level", 0.0)),
                           interval=guidance_interval(g.get("interval")))


def build_generator(cfg: dict[str, Any]) -> Generator:
    """The generator a resolved run config asks for (``model``, ``sampler``, ``guidance``, ``device``)."""
    model, device = cfg["model"], str(cfg.get("device", "auto"))
    kind = model_kind(model)
    if kind != "imagen" and cfg["guidance"].get("interval") is not None:
        raise ValueError(f"guidance.interval applies to the built-in cascade's sampler; model.kind={kind} guides "
                         "as its own sampler does: leave guidance.interval=null")
    if kind == "imagen":
        return CascadeGenerator.from_config(model, sampler_settings(cfg), device)
    if kind == "diffusers":
        return DiffusersGenerator.from_config(model, cfg["sampler"], cfg["guidance"], device)
    if kind == "python":
        return PythonGenerator.from_config(model, cfg["sampler"])
    raise ValueError(f"model.kind={kind!r}: expected imagen (the built-in cascade), diffusers or python")
