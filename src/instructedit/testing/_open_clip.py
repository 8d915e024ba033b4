"""A tiny open_clip CLIP model with random weights, and its ``local-dir:`` folder."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

from instructedit.clip import save_open_clip
from instructedit.clip_tokenizer import CLIP_CONTEXT_LENGTH, CLIP_VOCAB_SIZE
from instructedit.seeding import seeded

if TYPE_CHECKING:
    import open_clip

__all__ = ["TINY_OPEN_CLIP_CONFIG", "save_tiny_open_clip", "tiny_open_clip"]

TINY_OPEN_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {
        "context_length": CLIP_CONTEXT_LENGTH,
        "vocab_size": CLIP_VOCAB_SIZE,
        "width": 32,
        "heads": 2,
        "layers": 2,
    },
}
"""open_clip ``model_cfg`` of the tiny model: a ViT with 8×8 patches on 32×32 images and a
2-layer text transformer over the real CLIP vocabulary, projected to 32 dimensions."""


def _import_open_clip() -> Any:
    try:
        import open_clip
    except ImportError as error:  # pragma: no cover - open_clip is a core dependency
        raise ImportError("tiny_open_clip needs open_clip: pip install open_clip_torch") from error
    return open_clip


def tiny_open_clip(*, seed: int = 0) -> open_clip.CLIP:
    """Returns the tiny open_clip ``CLIP`` model with seeded random weights, in eval mode.

    It is built straight from :data:`TINY_OPEN_CLIP_CONFIG`; nothing is added to open_clip's
    global model registry. Use :func:`save_tiny_open_clip` to load it through
    ``open_clip.create_model_and_transforms("local-dir:...")`` with transforms and tokenizer.
    """
    open_clip = _import_open_clip()
    config = copy.deepcopy(TINY_OPEN_CLIP_CONFIG)
    with seeded(seed):
        model = open_clip.CLIP(**config)
    return model.eval()


def save_tiny_open_clip(directory: str | Path, *, seed: int = 0) -> Path:
    """Writes the tiny model as an open_clip ``local-dir:`` folder (see :func:`save_open_clip`)."""
    return save_open_clip(tiny_open_clip(seed=seed), TINY_OPEN_CLIP_CONFIG, directory)
