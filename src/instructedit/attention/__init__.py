"""Attention control: a context per attention call, a controller protocol, one processor."""

from instructedit._public import publish
from instructedit.attention._context import AttentionContext, AttentionController, Place, sdpa
from instructedit.attention._processor import (
    ControlledAttnProcessor,
    ControlState,
    attention_control,
)

__all__ = [
    "AttentionContext",
    "AttentionController",
    "ControlState",
    "ControlledAttnProcessor",
    "Place",
    "attention_control",
    "sdpa",
]

publish(__name__, globals(), __all__)
