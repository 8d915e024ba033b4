"""When Prompt-to-Prompt controls attention: step windows, per-word cross-attention schedules."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import torch
from torch import Tensor

from instructedit.p2p._alignment import word_token_indices

__all__ = ["CrossAttentionSchedule", "StepWindow", "as_window"]


def as_window(value: float | tuple[float, float], argument: str) -> tuple[float, float]:
    """Turns a fraction ``f`` into the window (0, f) and checks a (start, end) pair."""
    message = f"{argument} must be a fraction or a (start, end) window within [0, 1], got {value!r}"
    items = value if isinstance(value, Sequence) and not isinstance(value, str) else (0.0, value)
    if len(items) != 2 or any(isinstance(v, bool) or not isinstance(v, Real) for v in items):
        raise ValueError(message)
    start, end = float(items[0]), float(items[1])
    if not (math.isfinite(start) and math.isfinite(end) and 0.0 <= start <= end <= 1.0):
        raise ValueError(message)
    return start, end


@dataclass(frozen=True)
class StepWindow:
    """Steps ``int(n·start) ≤ step < int(n·end)`` of n (google/prompt-to-prompt's convention)."""

    start: float = 0.0
    """First fraction of the steps inside the window."""
    end: float = 1.0
    """Fraction where the window ends (exclusive)."""

    def __post_init__(self) -> None:
        as_window((self.start, self.end), "window")

    def contains(self, step: int, num_steps: int) -> bool:
        """Whether ``step`` (0-based) of ``num_steps`` is inside the window."""
        return int(num_steps * self.start) <= step < int(num_steps * self.end)


@dataclass(frozen=True)
class CrossAttentionSchedule:
    """Per-step, per-token blend weight α of cross-attention replacement.

    ``α = 1`` uses the edited (source-derived) attention for that target token, ``α = 0`` the
    target's own. ``default`` applies to every token; ``words`` overrides it for the tokens of
    given target words (google's ``cross_replace_steps`` dict with its ``default_`` key). A
    fraction ``f`` means the window (0, f).
    """

    default: float | tuple[float, float] = 0.8
    """Window of steps where every token is replaced."""
    words: Mapping[str, float | tuple[float, float]] = field(default_factory=dict)
    """Target word → its own window."""

    def __post_init__(self) -> None:
        as_window(self.default, "cross_replace_steps")
        for word, window in self.words.items():
            as_window(window, f"cross_replace_steps[{word!r}]")

    def alphas(self, target: str, tokenizer: Any, num_steps: int, length: int = 77) -> Tensor:
        """Returns α ``[num_steps, length]`` for one target prompt."""
        table = torch.zeros(num_steps, length)
        start, end = as_window(self.default, "cross_replace_steps")
        table[int(num_steps * start) : int(num_steps * end), :] = 1.0
        for word, window in self.words.items():
            start, end = as_window(window, f"cross_replace_steps[{word!r}]")
            positions = word_token_indices(target, word, tokenizer)
            table[:, positions] = 0.0
            table[int(num_steps * start) : int(num_steps * end), positions] = 1.0
        return table


def check_fractions(values: Sequence[float], argument: str) -> None:
    """Raises if any value is not a finite fraction in [0, 1]."""
    for value in values:
        if isinstance(value, bool) or not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"{argument} must be fractions in [0, 1], got {value!r}")
