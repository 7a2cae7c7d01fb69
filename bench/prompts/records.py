"""The prompt record every prompt set yields."""
from __future__ import annotations

import re
from dataclasses import dataclass

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class PromptRecord:
    """One prompt: a file-name-safe ``id``, the ``text`` as given, a ``category``, and for
    the synthetic shapes set the scene's ground truth as JSON (``truth``)."""

    id: str
    text: str
    category: str
    truth: str | None = None

    def __post_init__(self) -> None:
        if not _SAFE_ID.match(self.id) or ".." in self.id:
            raise ValueError(f"prompt id {self.id!r} is not file-name safe ([A-Za-z0-9._-], no '..')")
        if not self.text.strip():
            raise ValueError(f"prompt {self.id!r} is empty")
