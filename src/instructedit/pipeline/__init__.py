"""EditPipeline, its image handling, its masks for local edits, and edit sessions (turns)."""

from instructedit._public import publish
from instructedit.images import (
    DEFAULT_MAX_PIXELS,
    ImageInput,
    ResizeMode,
    load_image,
    official_size,
    prepare_image,
)
from instructedit.pipeline._config import (
    EDITING_CONFIG_NAME,
    EditingConfig,
    load_editing_config,
    save_editing_config,
)
from instructedit.pipeline._cost import CostEstimate
from instructedit.pipeline._edit import (
    SPEED_PRESETS,
    EditOutput,
    EditPipeline,
    OutputType,
    PipelineCallback,
    SpeedPreset,
)
from instructedit.pipeline._files import DEFAULT_MODEL, edit_files
from instructedit.pipeline._masks import (
    DIFFEDIT_STRENGTHS,
    MaskInput,
    MaskMethod,
    diffedit_mask,
    feather_mask,
    load_mask,
)
from instructedit.pipeline._session import SESSION_VERSION, Chain, EditSession, Turn

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MODEL",
    "DIFFEDIT_STRENGTHS",
    "EDITING_CONFIG_NAME",
    "SESSION_VERSION",
    "SPEED_PRESETS",
    "Chain",
    "CostEstimate",
    "EditOutput",
    "EditPipeline",
    "EditSession",
    "EditingConfig",
    "ImageInput",
    "MaskInput",
    "MaskMethod",
    "OutputType",
    "PipelineCallback",
    "ResizeMode",
    "SpeedPreset",
    "Turn",
    "diffedit_mask",
    "edit_files",
    "feather_mask",
    "load_editing_config",
    "load_image",
    "load_mask",
    "official_size",
    "prepare_image",
    "save_editing_config",
]

publish(__name__, globals(), __all__)
