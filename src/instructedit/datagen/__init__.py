"""The dataset generation run (stages 1–3 of the paper), sharded and resumable."""

from instructedit._public import publish
from instructedit.datagen._cli import PrecomputedCaptionEditor, generate_from_files, read_captions
from instructedit.datagen._images import (
    IMAGE_SUFFIXES,
    ImageCaptioner,
    RealImages,
    read_image_captions,
)
from instructedit.datagen._run import (
    GenerationConfig,
    GenerationSummary,
    generate_dataset,
    parse_shard,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "GenerationConfig",
    "GenerationSummary",
    "ImageCaptioner",
    "PrecomputedCaptionEditor",
    "RealImages",
    "generate_dataset",
    "generate_from_files",
    "parse_shard",
    "read_captions",
    "read_image_captions",
]

publish(__name__, globals(), __all__)
