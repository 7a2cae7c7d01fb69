"""Device names to torch devices, in one place: ``auto`` is cuda when available, else cpu."""
from __future__ import annotations

import torch


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto``: cuda when available, else cpu; anything else as torch spells it ("cuda:1", "cpu")."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
