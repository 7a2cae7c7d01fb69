"""Checkpoints as safetensors only: weights plus a JSON description in the metadata.

A stage file is self-describing: its metadata holds the architecture (``arch``), the
stage kind and training facts, so ``load_stage`` rebuilds the module without pickle.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .efficient_unet import EfficientUNet, EfficientUNetConfig
from .unet import BaseUNet, UNetConfig


class CheckpointError(RuntimeError):
    pass


# base-stage arch keys that files written by earlier versions carry, always at these inert values
LEGACY_BASE_KEYS = {"cond_channels": 0, "aug_level_embedding": False, "extra": {}}


def build_stage(kind: str, arch: dict[str, Any]) -> torch.nn.Module:
    """``kind`` is 'base' (BaseUNet) or 'sr' (EfficientUNet)."""
    fix = {k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()
           if not (kind == "base" and k in LEGACY_BASE_KEYS and v == LEGACY_BASE_KEYS[k])}
    if kind == "base":
        return BaseUNet(UNetConfig(**fix))
    if kind == "sr":
        return EfficientUNet(EfficientUNetConfig(**fix))
    raise CheckpointError(f"unknown stage kind {kind!r}: expected base or sr")


def arch_of(model: torch.nn.Module) -> dict[str, Any]:
    return dataclasses.asdict(model.cfg)


def atomic_save(tensors: dict[str, torch.Tensor], path: str | Path, meta: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
              metadata={"imagen_bench": json.dumps(meta, sort_keys=True)})
    os.replace(tmp, path)


def read_meta(path: str | Path) -> dict[str, Any]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    if "imagen_bench" not in meta:
        raise CheckpointError(f"{path}: safetensors file without imagen-bench metadata (not a stage checkpoint)")
    return json.loads(meta["imagen_bench"])


def save_stage(model: torch.nn.Module, path: str | Path, kind: str, dtype: torch.dtype = torch.float16,
               **info: Any) -> None:
    """Stage weights for sampling; stored as float16 by default (half the size), loaded as float32."""
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    atomic_save(state, path, {"kind": kind, "arch": arch_of(model), "stored_dtype": str(dtype), **info})


def load_stage(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a stage from its safetensors file; shape or key mismatches raise CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    meta = read_meta(path)
    try:
        model = build_stage(meta["kind"], meta["arch"])
    except (KeyError, TypeError, ValueError) as e:  # metadata without kind / arch, or an unknown arch key
        raise CheckpointError(f"{path}: its metadata does not describe a stage this version can build ({e!r})") from e
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not match the architecture in its metadata:\n{e}") from e
    bad = [k for k, v in state.items() if not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: non-finite values in {bad[:3]}")
    return model.to(device).eval(), meta
