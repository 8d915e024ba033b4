"""A model's recommended guidance, stored beside its weights (``guidance_config.json``).

Like transformers' ``generation_config.json``: the scales an editor was tuned for travel with it,
so :meth:`EditPipeline.from_pretrained <instructedit.pipeline.EditPipeline.from_pretrained>`
uses them when the caller names none. A folder without the file (``timbrooks/instruct-pix2pix``,
any diffusers folder) gets the paper's scales. diffusers ignores the file.
"""

from __future__ import annotations

import json
import logging
from dataclasses import fields
from pathlib import Path
from typing import Any

from instructedit.guidance._guidance import DualGuidance

__all__ = ["GUIDANCE_CONFIG_NAME", "load_guidance_config", "save_guidance_config"]

GUIDANCE_CONFIG_NAME = "guidance_config.json"
"""The file name of a pipeline folder's recommended guidance."""

logger = logging.getLogger(__name__)

# What a file stores: every field of DualGuidance but the machine's backend.
_FIELDS = tuple(field.name for field in fields(DualGuidance) if field.name != "backend")


def save_guidance_config(
    guidance: DualGuidance, directory: str | Path, *, note: str | None = None
) -> Path:
    """Writes ``guidance``'s scales, rescale and interval to ``directory/guidance_config.json``
    (atomically). Its ``backend`` is a property of the machine, not of the model, and is not
    stored.

    Args:
        guidance: the recommended guidance.
        directory: a pipeline folder.
        note: how the scales were chosen, kept in the file as ``_note``.
    """
    if not isinstance(guidance, DualGuidance):
        raise TypeError(f"guidance must be a DualGuidance, got {type(guidance).__name__}")
    from instructedit._version import __version__

    values: dict[str, Any] = {"_class_name": "DualGuidance", "_instructedit_version": __version__}
    values.update(
        text_scale=float(guidance.text_scale),
        image_scale=float(guidance.image_scale),
        guidance_rescale=float(guidance.guidance_rescale),
        interval=[float(v) for v in guidance.interval],
    )
    if note is not None:
        values["_note"] = note
    from instructedit.checkpoints import write_json_atomic

    path = Path(directory) / GUIDANCE_CONFIG_NAME
    write_json_atomic(path, values)
    return path


def load_guidance_config(directory: str | Path) -> DualGuidance | None:
    """The guidance stored in ``directory/guidance_config.json``, or ``None`` without the file.

    Keys starting with ``_`` are notes; a missing field keeps
    :class:`~instructedit.guidance.DualGuidance`'s default, and a field this version does not
    know (written by a newer one) is ignored with a warning.

    Raises:
        ValueError: the file is not a JSON object, names another class than ``DualGuidance``,
            or a value is out of range (the message names the file).
    """
    path = Path(directory) / GUIDANCE_CONFIG_NAME
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(values).__name__}")
    class_name = values.get("_class_name", "DualGuidance")
    if class_name != "DualGuidance":
        raise ValueError(f"{path} describes a {class_name!r}, not a 'DualGuidance'")
    stored = {key: value for key, value in values.items() if not key.startswith("_")}
    unknown = sorted(set(stored) - set(_FIELDS))
    if unknown:
        logger.warning(
            "%s: ignoring field(s) %s, unknown to this version (known: %s)",
            path,
            unknown,
            list(_FIELDS),
        )
        stored = {key: value for key, value in stored.items() if key in _FIELDS}
    if "interval" in stored:
        interval = stored["interval"]
        if not isinstance(interval, list):
            raise ValueError(f"{path}: interval must be a [start, end] list, got {interval!r}")
        stored["interval"] = tuple(interval)
    try:
        return DualGuidance(**stored)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from error
