"""EditPipeline and its image handling."""

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

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MODEL",
    "EditOutput",
    "EditPipeline",
    "ImageInput",
    "OutputType",
    "PipelineCallback",
    "ResizeMode",
    "edit_files",
    "load_image",
    "official_size",
    "prepare_image",
]

publish(__name__, globals(), __all__)
