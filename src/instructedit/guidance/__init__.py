"""Guidance: named branches, the reference maths, and the fused guided step."""

from instructedit._public import publish
from instructedit.guidance._config import (
    GUIDANCE_CONFIG_NAME,
    load_guidance_config,
    save_guidance_config,
)
from instructedit.guidance._distilled import SCALE_EMBEDDING_DIM, is_distilled, scale_embedding
from instructedit.guidance._fused import fused_guided_step, fused_guided_step_torch
from instructedit.guidance._guidance import (
    Backend,
    ClassifierFreeGuidance,
    DualGuidance,
    Guidance,
    check_scale,
)
from instructedit.guidance._reference import (
    dual_guidance,
    dual_guidance_weights,
    rescale_guidance,
    weighted_sum,
)

__all__ = [
    "GUIDANCE_CONFIG_NAME",
    "SCALE_EMBEDDING_DIM",
    "Backend",
    "ClassifierFreeGuidance",
    "DualGuidance",
    "Guidance",
    "check_scale",
    "dual_guidance",
    "dual_guidance_weights",
    "fused_guided_step",
    "fused_guided_step_torch",
    "is_distilled",
    "load_guidance_config",
    "rescale_guidance",
    "save_guidance_config",
    "scale_embedding",
    "weighted_sum",
]

publish(__name__, globals(), __all__)
