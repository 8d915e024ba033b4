"""Guidance: named branches, the reference maths, and the fused guided step."""

from instructedit._public import publish
from instructedit.guidance._fused import (
    AffineUpdate,
    advance_scheduler,
    affine_update,
    draw_step_noise,
    fused_guided_step,
    fused_guided_step_torch,
    resolve_backend,
)
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
    "AffineUpdate",
    "Backend",
    "ClassifierFreeGuidance",
    "DualGuidance",
    "Guidance",
    "advance_scheduler",
    "affine_update",
    "check_scale",
    "draw_step_noise",
    "dual_guidance",
    "dual_guidance_weights",
    "fused_guided_step",
    "fused_guided_step_torch",
    "rescale_guidance",
    "resolve_backend",
    "weighted_sum",
]

publish(__name__, globals(), __all__)
