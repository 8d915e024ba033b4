"""Stage 3: CLIP scoring and InstructPix2Pix's directional-similarity filter (open_clip)."""

from instructedit._public import publish
from instructedit.clip._files import save_open_clip
from instructedit.clip._filter import ClipDirectionalFilter, ClipScores, FilterResult
from instructedit.clip._scorer import ClipScorer, official_preprocess
from instructedit.clip._similarity import (
    directional_similarity,
    image_image_similarity,
    image_text_similarity,
)
from instructedit.clip._structure import edge_map, structure_similarity

__all__ = [
    "ClipDirectionalFilter",
    "ClipScorer",
    "ClipScores",
    "FilterResult",
    "directional_similarity",
    "edge_map",
    "image_image_similarity",
    "image_text_similarity",
    "official_preprocess",
    "save_open_clip",
    "structure_similarity",
]

publish(__name__, globals(), __all__)
