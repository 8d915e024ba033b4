"""A model's recommended editing settings, stored beside its weights (``editing_config.json``).

Like ``guidance_config.json`` for the guidance scales: the masking an editor edits best with
travels with it, so :class:`~instructedit.pipeline.EditPipeline` uses it for every masking
argument the caller leaves at ``None``. A folder without the file edits the whole image, as
diffusers does. diffusers ignores the file.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

from instructedit._stored_config import read_stored_config, write_stored_config
from instructedit.pipeline._masks import MaskMethod

__all__ = ["EDITING_CONFIG_NAME", "EditingConfig", "load_editing_config", "save_editing_config"]

EDITING_CONFIG_NAME = "editing_config.json"
"""The file name of a pipeline folder's recommended editing settings."""


@dataclass(frozen=True)
class EditingConfig:
    """The masking an editor uses when the call names none (see
    :meth:`EditPipeline.__call__ <instructedit.pipeline.EditPipeline.__call__>` for each field).

    Attributes:
        mask_image: ``"auto"`` to find a mask from every instruction, or ``None`` to edit the
            whole image (the default, as diffusers does).
        mask_method: how ``"auto"`` finds the mask.
        mask_threshold: for ``"auto"``, the share of the strongest response kept, in [0, 1].
        keep_unmasked_pixels: with a mask, paste the input's pixels back outside it.
        mask_feather: Gaussian sigma, in pixels, of the pasted edge (0: a hard edge).
    """

    mask_image: Literal["auto"] | None = None
    mask_method: MaskMethod = "diffedit"
    mask_threshold: float = 0.5
    keep_unmasked_pixels: bool = False
    mask_feather: float = 1.0

    def __post_init__(self) -> None:
        if self.mask_image not in (None, "auto"):
            raise ValueError(
                f"mask_image must be 'auto' or None (a stored setting cannot be one image), "
                f"got {self.mask_image!r}"
            )
        if self.mask_method not in get_args(MaskMethod):
            raise ValueError(
                f"mask_method must be one of {list(get_args(MaskMethod))}, got {self.mask_method!r}"
            )
        for name, upper in (("mask_threshold", 1.0), ("mask_feather", math.inf)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a number, got {type(value).__name__}")
            if not 0 <= value <= upper:
                allowed = "in [0, 1]" if upper == 1.0 else "finite and >= 0"
                raise ValueError(f"{name} must be {allowed}, got {value}")
        if not isinstance(self.keep_unmasked_pixels, bool):
            raise TypeError(
                f"keep_unmasked_pixels must be True or False, got {self.keep_unmasked_pixels!r}"
            )


_FIELDS = tuple(field.name for field in fields(EditingConfig))


def save_editing_config(
    config: EditingConfig, directory: str | Path, *, note: str | None = None
) -> Path:
    """Writes ``config`` to ``directory/editing_config.json`` (atomically).

    Args:
        config: the recommended settings.
        directory: a pipeline folder.
        note: how the settings were chosen, kept in the file as ``_note``.
    """
    if not isinstance(config, EditingConfig):
        raise TypeError(f"config must be an EditingConfig, got {type(config).__name__}")
    values: dict[str, Any] = asdict(config)
    path = Path(directory) / EDITING_CONFIG_NAME
    return write_stored_config(path, "EditingConfig", values, note=note)


def load_editing_config(directory: str | Path) -> EditingConfig | None:
    """The settings stored in ``directory/editing_config.json``, or ``None`` without the file.

    Keys starting with ``_`` are notes; a missing field keeps :class:`EditingConfig`'s default,
    and a field this version does not know is ignored with a warning.

    Raises:
        ValueError: the file is not a JSON object, names another class than
            ``EditingConfig``, or a value is not allowed (the message names the file).
    """
    path = Path(directory) / EDITING_CONFIG_NAME
    stored = read_stored_config(path, "EditingConfig", _FIELDS)
    if stored is None:
        return None
    try:
        return EditingConfig(**stored)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from error
