"""Device names to torch devices, and ``model.dtype`` to a compute dtype, in one place."""
from __future__ import annotations

from pathlib import Path

import torch

DTYPE_NAMES = ("float32", "bfloat16")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")   # /proc/cpuinfo flags of a CPU that computes bf16 in hardware


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto``: cuda when available, else cpu; anything else as torch spells it ("cuda:1", "cpu")."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bf16 in hardware (flags ``avx512_bf16`` or ``amx_bf16``); elsewhere oneDNN
    emulates it, slower than float32 (README "Performance")."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = next((ln.split(":", 1)[1].split() for ln in cpuinfo.splitlines() if ln.startswith("flags")), [])
    return any(f in flags for f in BF16_FLAGS)


def resolve_dtype(name: str, device: torch.device) -> str:
    """``model.dtype`` of the built-in cascade: ``auto`` is bfloat16 on a CPU with native bf16, where it was
    measured to keep the metrics within their intervals and to sample faster, and float32 elsewhere (GPUs
    included: not measured there); ``float32`` and ``bfloat16`` are taken as they are."""
    if name == "auto":
        return "bfloat16" if device.type == "cpu" and native_bf16() else "float32"
    if name not in DTYPE_NAMES:
        raise ValueError(f"model.dtype={name!r}: expected auto or one of {list(DTYPE_NAMES)}")
    return name
