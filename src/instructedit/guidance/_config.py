"""A model's recommended guidance, stored beside its weights (``guidance_config.json``).

Like transformers' ``generation_config.json``: the scales an editor was tuned for travel with it,
so :meth:`EditPipeline.from_pretrained <instructedit.pipeline.EditPipeline.from_pretrained>`
uses them when the caller names none. A folder without the file (``timbrooks/instruct-pix2pix``,
any diffusers folder) gets the paper's scales. diffusers ignores the file.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from instructedit._stored_config import read_stored_config, write_stored_config
from instructedit.guidance._guidance import DualGuidance

__all__ = ["GUIDANCE_CONFIG_NAME", "load_guidance_config", "save_guidance_config"]

GUIDANCE_CONFIG_NAME = "guidance_config.json"
"""The file name of a pipeline folder's recommended guidance."""

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
    values = {
        "text_scale": float(guidance.text_scale),
        "image_scale": float(guidance.image_scale),
        "guidance_rescale": float(guidance.guidance_rescale),
        "interval": [float(v) for v in guidance.interval],
    }
    path = Path(directory) / GUIDANCE_CONFIG_NAME
    return write_stored_config(path, "DualGuidance", values, note=note)


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
    stored = read_stored_config(path, "DualGuidance", _FIELDS)
    if stored is None:
        return None
    if "interval" in stored:
        interval = stored["interval"]
        if not isinstance(interval, list):
            raise ValueError(f"{path}: interval must be a [start, end] list, got {interval!r}")
        stored["interval"] = tuple(interval)
    try:
        return DualGuidance(**stored)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from error
