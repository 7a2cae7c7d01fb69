"""Small helpers shared by the command-line entry points."""
from __future__ import annotations


def missing_arguments(argv: list[str], required: tuple[str, ...]) -> list[str]:
    """The ``required`` Hydra keys that no ``key=value`` override in ``argv`` sets."""
    given = {a.lstrip("+").split("=", 1)[0] for a in argv if "=" in a and not a.startswith("-")}
    return [k for k in required if k not in given]
