"""Stage 1: caption edits — (caption) → (instruction, edited caption)."""

from instructedit._public import publish
from instructedit.captions._chat import CHAT_EXAMPLES, ChatCaptionEditor, ChatSettings
from instructedit.captions._format import (
    END,
    INSTRUCTION_SEPARATOR,
    PROMPT_SEPARATOR,
    CaptionEdit,
    CaptionEditor,
    Rejection,
    format_completion,
    format_prompt,
    is_identity_edit,
    judge_completion,
    parse_completion,
    read_caption_edits,
)
from instructedit.captions._language_model import (
    LanguageModelCaptionEditor,
    SamplingConfig,
    finetune_caption_editor,
)
from instructedit.captions._template import TemplateCaptionEditor, TemplateRule, caption_rng

__all__ = [
    "CHAT_EXAMPLES",
    "END",
    "INSTRUCTION_SEPARATOR",
    "PROMPT_SEPARATOR",
    "CaptionEdit",
    "CaptionEditor",
    "ChatCaptionEditor",
    "ChatSettings",
    "LanguageModelCaptionEditor",
    "Rejection",
    "SamplingConfig",
    "TemplateCaptionEditor",
    "TemplateRule",
    "caption_rng",
    "finetune_caption_editor",
    "format_completion",
    "format_prompt",
    "is_identity_edit",
    "judge_completion",
    "parse_completion",
    "read_caption_edits",
]

publish(__name__, globals(), __all__)
