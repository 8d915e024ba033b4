"""instructedit: InstructPix2Pix (Brooks, Holynski and Efros, CVPR 2023) as composable software.

Edit an image by telling it what to change, and build, filter, train and evaluate such editors
yourself. ``import instructedit`` is cheap: heavy dependencies (torch, diffusers, open_clip,
Triton, datasets) load only when a component that needs them is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from instructedit._version import __version__

if TYPE_CHECKING:
    from instructedit.clip import ClipDirectionalFilter
    from instructedit.default import load_default, load_default_clip
    from instructedit.guidance import ClassifierFreeGuidance, DualGuidance
    from instructedit.p2p import PromptToPrompt
    from instructedit.pipeline import EditOutput, EditPipeline, EditSession
    from instructedit.sampling import denoise
    from instructedit.training import TrainConfig, Trainer

__all__ = [
    "ClassifierFreeGuidance",
    "ClipDirectionalFilter",
    "DualGuidance",
    "EditOutput",
    "EditPipeline",
    "EditSession",
    "PromptToPrompt",
    "TrainConfig",
    "Trainer",
    "__version__",
    "denoise",
    "load_default",
    "load_default_clip",
]

# The design card's API (stage by stage: pairs, filter, training, editing) and what a user needs
# beside it; each name imports its subpackage on first use.
_LAZY = {
    "ClassifierFreeGuidance": "instructedit.guidance",
    "ClipDirectionalFilter": "instructedit.clip",
    "DualGuidance": "instructedit.guidance",
    "EditOutput": "instructedit.pipeline",
    "EditPipeline": "instructedit.pipeline",
    "EditSession": "instructedit.pipeline",
    "PromptToPrompt": "instructedit.p2p",
    "TrainConfig": "instructedit.training",
    "Trainer": "instructedit.training",
    "denoise": "instructedit.sampling",
    "load_default": "instructedit.default",
    "load_default_clip": "instructedit.default",
}


def __getattr__(name: str) -> Any:
    """Imports public names on first use (PEP 562), keeping ``import instructedit`` light."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'instructedit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
