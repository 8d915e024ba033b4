"""EditRecord: one training example (input image, instruction, edited image)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

__all__ = ["EditRecord"]


@dataclass(frozen=True)
class EditRecord:
    """One example of an editing dataset.

    Attributes:
        input_image: the image before the edit (RGB).
        edit_prompt: the instruction.
        edited_image: the image after the edit (RGB).
        input_caption: caption of the input image, when known.
        output_caption: caption of the edited image, when known.
        seed: generation seed, when generated.
        metadata: per-sample parameters and scores (``p2p_threshold``, ``cfg_scale``,
            ``clip_sim_0``, ``clip_sim_1``, ``clip_sim_dir``, ``clip_sim_image``).
    """

    input_image: Image.Image
    edit_prompt: str
    edited_image: Image.Image
    input_caption: str | None = None
    output_caption: str | None = None
    seed: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("input_image", "edited_image"):
            if not isinstance(getattr(self, name), Image.Image):
                raise TypeError(
                    f"{name} must be a PIL image, got {type(getattr(self, name)).__name__}"
                )
        if not isinstance(self.edit_prompt, str) or not self.edit_prompt.strip():
            raise ValueError("edit_prompt must be a non-empty string")
