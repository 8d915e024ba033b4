"""Call arguments shared by the pipelines: batches of prompts or images, counts, output types.

:class:`~instructedit.pipeline.EditPipeline` and :class:`~instructedit.p2p.PromptToPrompt` take
the same kinds of arguments (one item or a list, a single one broadcast against a list, a step
count, an output type) and check them here, so both name the argument, what was given and what is
allowed in the same words, before any model runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypeVar, get_args

__all__ = [
    "OUTPUT_TYPES",
    "REPEATED",
    "OutputType",
    "as_list",
    "broadcast",
    "check_output_type",
    "check_positive_int",
    "check_side",
    "check_texts",
    "pair_count",
    "per_item",
]

OutputType = Literal["pil", "np", "pt", "latent"]
"""What a pipeline returns: PIL images, an ``[N, H, W, 3]`` array in [0, 1], an ``[N, 3, H, W]``
tensor in [0, 1], or the final latents."""

OUTPUT_TYPES: tuple[OutputType, ...] = get_args(OutputType)

REPEATED = "repeated"
"""Marks a list parameter of a command as given one value per flag, in order
(``--instruction A --instruction B``): ``Annotated[Sequence[str], REPEATED]``. The command line
generator gives other list parameters several values after one flag, which would also take the
positional arguments written after it."""

T = TypeVar("T")


def as_list(value: Any, argument: str) -> list[Any]:
    """Returns ``value`` as a list: a list or tuple as it is, anything else (one prompt, one
    image) as a list of one. Raises ``ValueError`` naming ``argument`` for an empty list."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"{argument} must be one item or a non-empty list, got an empty list")
        return list(value)
    return [value]


def check_texts(texts: Sequence[Any], argument: str, *, allow_empty: bool = False) -> list[str]:
    """Returns ``texts`` as strings; raises ``TypeError`` for a non-string entry and, unless
    ``allow_empty``, ``ValueError`` for an empty or blank one, naming ``argument[index]``."""
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{argument}[{index}] must be a str, got {type(text).__name__}")
        if not allow_empty and not text.strip():
            raise ValueError(f"{argument}[{index}] is empty; write the text, e.g. 'make it snowy'")
    return list(texts)


def pair_count(
    first: Sequence[Any], first_name: str, second: Sequence[Any], second_name: str
) -> int:
    """Returns how many items two lists that pair up element-wise make: their common length, or
    the longer one's when the other holds a single item (it is broadcast)."""
    if len(first) > 1 and len(second) > 1 and len(first) != len(second):
        raise ValueError(
            f"got {len(first)} {first_name} and {len(second)} {second_name}; pass equal counts, "
            "or a single one of either to broadcast"
        )
    return max(len(first), len(second))


def broadcast(items: list[T], count: int, argument: str) -> list[T]:
    """Returns ``items`` repeated to ``count`` when it holds one item; raises ``ValueError`` naming
    ``argument`` unless it holds 1 or ``count``."""
    if len(items) == 1:
        return items * count
    if len(items) != count:
        raise ValueError(f"{argument} has {len(items)} entries, expected 1 or {count}")
    return items


def per_item(
    value: Any, count: int, argument: str, kind: type | tuple[type, ...], what: str
) -> list[Any]:
    """Returns one value per item: a single ``kind`` value repeated ``count`` times, or a sequence
    of exactly ``count``; raises ``ValueError`` naming ``argument`` (``what`` describes one value,
    e.g. ``"an int"``) otherwise."""
    if isinstance(value, kind) and not isinstance(value, bool):
        return [value] * count
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{argument} must be {what} or a list of {count}, got {value!r}")
    values = list(value)
    if len(values) != count:
        raise ValueError(
            f"got {len(values)} {argument} values for {count} items; pass 1 or {count}"
        )
    return values


def check_positive_int(value: Any, argument: str) -> int:
    """Returns ``value`` if it is an int >= 1 (bools refused); raises ``ValueError`` naming
    ``argument`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{argument} must be an int >= 1, got {value!r}")
    return value


def check_side(value: Any, argument: str, multiple: int) -> int:
    """Returns ``value`` if it is an image side in pixels, a positive int multiple of
    ``multiple`` (the pixels per latent; bools refused); raises ``TypeError``/``ValueError``
    naming ``argument`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{argument} must be an int, a positive multiple of {multiple}, "
            f"got {type(value).__name__} {value!r}"
        )
    if value < multiple or value % multiple:
        raise ValueError(f"{argument} must be a positive multiple of {multiple}, got {value}")
    return value


def check_output_type(value: Any) -> OutputType:
    """Returns ``value`` if it is one of :data:`OUTPUT_TYPES`; raises ``ValueError`` otherwise."""
    if value not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {value!r}")
    return value
