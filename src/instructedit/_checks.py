"""Argument checks shared by the library's configs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def check_counts(config: Any, names: Iterable[str], *, minimum: int = 1) -> None:
    """Raises ``ValueError`` naming the first of ``names`` whose value on ``config`` is not an
    int >= ``minimum`` (bools are refused too)."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
