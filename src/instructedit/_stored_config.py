"""Small JSON settings a model folder stores beside its weights (``guidance_config.json``,
``editing_config.json``): written atomically, read back with clear errors naming the file."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def write_stored_config(
    path: Path, class_name: str, values: Mapping[str, Any], *, note: str | None = None
) -> Path:
    """Writes ``values`` to ``path`` with the class name, the package version and an optional
    ``_note`` (how the values were chosen)."""
    from instructedit._version import __version__
    from instructedit.checkpoints import write_json_atomic

    stored: dict[str, Any] = {"_class_name": class_name, "_instructedit_version": __version__}
    stored.update(values)
    if note is not None:
        stored["_note"] = note
    write_json_atomic(path, stored)
    return path


def read_stored_config(path: Path, class_name: str, known: Iterable[str]) -> dict[str, Any] | None:
    """The fields stored in ``path``, or ``None`` without the file.

    Keys starting with ``_`` are notes; a field this version does not know (written by a newer
    one) is dropped with a warning.

    Raises:
        ValueError: the file is not a JSON object, or names another class than ``class_name``
            (the message names the file).
    """
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(values).__name__}")
    stored_class = values.get("_class_name", class_name)
    if stored_class != class_name:
        raise ValueError(f"{path} describes a {stored_class!r}, not a {class_name!r}")
    stored = {key: value for key, value in values.items() if not key.startswith("_")}
    known = tuple(known)
    unknown = sorted(set(stored) - set(known))
    if unknown:
        logger.warning(
            "%s: ignoring field(s) %s, unknown to this version (known: %s)",
            path,
            unknown,
            list(known),
        )
    return {key: value for key, value in stored.items() if key in known}
