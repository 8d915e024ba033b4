"""EditPipeline, its image handling and its masks for local edits."""

from instructedit._public import publish
from instructedit.images import (
    DEFAULT_MAX_PIXELS,
    ImageInput,
    ResizeMode,
    load_image,
    official_size,
    prepare_image,
)
from instructedit.pipeline._edit import EditOutput, EditPipeline, OutputType, PipelineCallback
from instructedit.pipeline._files import DEFAULT_MODEL, edit_files
from instructedit.pipeline._masks import (
    DIFFEDIT_STRENGTHS,
    MaskInput,
    MaskMethod,
    diffedit_mask,
    feather_mask,
    load_mask,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MODEL",
    "DIFFEDIT_STRENGTHS",
    "EditOutput",
    "EditPipeline",
    "ImageInput",
    "MaskInput",
    "MaskMethod",
    "OutputType",
    "PipelineCallback",
    "ResizeMode",
    "diffedit_mask",
    "edit_files",
    "feather_mask",
    "load_image",
    "load_mask",
    "official_size",
    "prepare_image",
]

publish(__name__, globals(), __all__)
