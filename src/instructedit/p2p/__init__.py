"""Prompt-to-Prompt (Hertz et al. 2022): attention controllers, paired generation, real images.

Stage 2 of InstructPix2Pix: render a caption and its edited caption from the same noise so that
only the edit changes. The official InstructPix2Pix generator uses
:class:`SelfAttentionInjection`; google/prompt-to-prompt's word swap, refinement, re-weighting
and local blending are :class:`WordSwap`, :class:`Refine`, :class:`Reweight` and
:class:`LocalBlend` inside a :class:`CrossAttentionEdit`.

Real images enter by DDIM or null-text inversion, or without inversion by InfEdit's virtual
inversion (:class:`VirtualInversion`) with its unified attention control
(:class:`UnifiedAttentionControl`): :meth:`PromptToPrompt.edit_real` and
:meth:`PromptToPrompt.sample_real_pairs`.
"""

from instructedit._public import publish
from instructedit.p2p._alignment import (
    align_tokens,
    edited_words,
    refinement_mapper,
    swap_mapper,
    word_token_indices,
)
from instructedit.p2p._cli import edit_real_file
from instructedit.p2p._controllers import (
    AttentionStore,
    CrossAttentionEdit,
    CrossEdit,
    LocalBlend,
    Refine,
    Reweight,
    SelfAttentionInjection,
    WordSwap,
    injection_active,
)
from instructedit.p2p._inversion import Inversion, ddim_inversion, invert, null_text_inversion
from instructedit.p2p._pipeline import (
    PAIR_CONTROLS,
    REAL_EDIT_METHODS,
    PairCandidate,
    PairControl,
    PairOutput,
    PromptToPrompt,
    RealEditMethod,
    check_local_blend,
)
from instructedit.p2p._schedules import CrossAttentionSchedule, StepWindow
from instructedit.p2p._unified import UnifiedAttentionControl, fill_alignment_gaps
from instructedit.p2p._virtual import VirtualInversion
from instructedit.p2p._visualize import attention_grid

__all__ = [
    "PAIR_CONTROLS",
    "REAL_EDIT_METHODS",
    "AttentionStore",
    "CrossAttentionEdit",
    "CrossAttentionSchedule",
    "CrossEdit",
    "Inversion",
    "LocalBlend",
    "PairCandidate",
    "PairControl",
    "PairOutput",
    "PromptToPrompt",
    "RealEditMethod",
    "Refine",
    "Reweight",
    "SelfAttentionInjection",
    "StepWindow",
    "UnifiedAttentionControl",
    "VirtualInversion",
    "WordSwap",
    "align_tokens",
    "attention_grid",
    "check_local_blend",
    "ddim_inversion",
    "edit_real_file",
    "edited_words",
    "fill_alignment_gaps",
    "injection_active",
    "invert",
    "null_text_inversion",
    "refinement_mapper",
    "swap_mapper",
    "word_token_indices",
]

publish(__name__, globals(), __all__)
