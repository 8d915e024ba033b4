"""Presents objects re-exported by a package as members of that package."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["publish"]


def publish(package: str, namespace: dict[str, Any], names: Iterable[str]) -> None:
    """Sets ``__module__`` of the classes and functions in ``names`` to ``package`` when they are
    defined in one of its private submodules, so reprs, pickles of classes, and the API docs name
    the public path (``instructedit.guidance.DualGuidance``), not the private file."""
    prefix = package + "._"
    for name in names:
        value = namespace[name]
        module = getattr(value, "__module__", None)
        if (
            isinstance(module, str)
            and module.startswith(prefix)
            and isinstance(value, type | type(publish))
        ):
            value.__module__ = package
