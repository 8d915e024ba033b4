"""Argument checks shared by the library's configs."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def check_counts(config: Any, names: Iterable[str], *, minimum: int = 1) -> None:
    """Raises ``ValueError`` naming the first of ``names`` whose value on ``config`` is not an
    int >= ``minimum`` (bools are refused too)."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def check_range(
    name: str, value: Any, *, minimum: float = 0.0, maximum: float | None = None
) -> None:
    """Raises ``ValueError`` naming ``name`` unless ``value`` is a pair of finite numbers
    ``(low, high)`` with ``minimum <= low <= high`` (and ``high <= maximum`` when given): the
    range a value is drawn from uniformly."""
    bounds = f"{minimum:g} <= low <= high" + ("" if maximum is None else f" <= {maximum:g}")
    try:
        if isinstance(value, (str, bytes)):  # "12" would unpack into (1.0, 2.0)
            raise TypeError
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (low, high) with {bounds}, got {value!r}") from None
    upper = math.inf if maximum is None else maximum
    if not (math.isfinite(low) and math.isfinite(high) and minimum <= low <= high <= upper):
        raise ValueError(f"{name} must be (low, high) with {bounds}, got {value!r}")
