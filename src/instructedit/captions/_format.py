"""The official caption-edit formats: records, the fine-tuning prompt/completion, rejection rules."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from instructedit.data._folder import read_jsonl_file

__all__ = [
    "END",
    "INSTRUCTION_SEPARATOR",
    "PROMPT_SEPARATOR",
    "CaptionEdit",
    "CaptionEditor",
    "Rejection",
    "format_completion",
    "format_prompt",
    "is_identity_edit",
    "judge_completion",
    "parse_completion",
    "read_caption_edits",
]

PROMPT_SEPARATOR = "\n##\n"
"""Ends the prompt: ``caption + "\\n##\\n"``."""
INSTRUCTION_SEPARATOR = "\n%%\n"
"""Separates the instruction from the edited caption in the completion."""
END = "\nEND"
"""Ends the completion (the stop sequence)."""


@dataclass(frozen=True)
class CaptionEdit:
    """One caption edit: (input caption, instruction, edited caption).

    Attributes:
        input: the image caption.
        instruction: the edit instruction ("have her ride a dragon").
        output: the edited caption.
    """

    input: str
    instruction: str
    output: str

    def to_json(self) -> dict[str, str]:
        """The official JSONL record: ``{"input", "edit", "output"}``."""
        return {"input": self.input, "edit": self.instruction, "output": self.output}


@dataclass(frozen=True)
class Rejection:
    """A caption for which no acceptable edit was produced, and why.

    Attributes:
        input: the caption.
        reason: ``"identity"`` (edited caption equals the input), ``"unparseable"`` (the model's
            text lacks the format), ``"empty"``, or an editor-specific reason.
        text: the last rejected model output, for inspection.
    """

    input: str
    reason: str
    text: str = ""


@runtime_checkable
class CaptionEditor(Protocol):
    """Turns captions into caption edits (GPT-3's part in the paper)."""

    def edit(self, captions: Sequence[str]) -> list[CaptionEdit | Rejection]:
        """Returns one :class:`CaptionEdit` or :class:`Rejection` per caption, in order."""
        ...


def check_captions(captions: Sequence[str]) -> list[str]:
    """Returns ``captions`` as a list; raises ``TypeError`` for a single string (which would be
    read as one caption per character) or a non-string entry, naming ``captions[index]``."""
    if isinstance(captions, (str, bytes)) or not isinstance(captions, Sequence):
        raise TypeError(
            f"captions must be a list of str, got {type(captions).__name__}; wrap a single "
            "caption in [...]"
        )
    for index, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise TypeError(f"captions[{index}] must be a str, got {type(caption).__name__}")
    return list(captions)


def format_prompt(caption: str) -> str:
    """The fine-tuning prompt: ``caption + "\\n##\\n"``."""
    return caption + PROMPT_SEPARATOR


def format_completion(instruction: str, output: str) -> str:
    """The fine-tuning completion: ``instruction + "\\n%%\\n" + output + "\\nEND"``."""
    return instruction + INSTRUCTION_SEPARATOR + output + END


def parse_completion(text: str) -> tuple[str, str] | None:
    """Parses a generated completion into (instruction, edited caption), or ``None``.

    Text after ``"\\nEND"`` is ignored; a missing ``END`` is accepted when the text otherwise
    parses (generation may stop exactly at it). Both parts must be non-empty single lines.
    """
    body = text.split(END, 1)[0]
    if INSTRUCTION_SEPARATOR not in body:
        return None
    instruction, output = (part.strip() for part in body.split(INSTRUCTION_SEPARATOR, 1))
    if not instruction or not output or "\n" in instruction or "\n" in output:
        return None
    if PROMPT_SEPARATOR.strip() in output or INSTRUCTION_SEPARATOR.strip() in output:
        return None
    return instruction, output


def _normalise(caption: str) -> str:
    return caption.lower().strip().strip(".!?").strip()


def is_identity_edit(caption: str, edited: str) -> bool:
    """Whether the edited caption equals the input ignoring case and surrounding ``.!?``."""
    return _normalise(caption) == _normalise(edited)


def judge_completion(caption: str, text: str) -> CaptionEdit | Rejection:
    """A generated completion for ``caption`` as an edit, or why it is none: ``"unparseable"``
    (:func:`parse_completion` fails) or ``"identity"`` (:func:`is_identity_edit`); the
    rejection keeps ``text``."""
    parsed = parse_completion(text)
    if parsed is None:
        return Rejection(caption, "unparseable", text)
    if is_identity_edit(caption, parsed[1]):
        return Rejection(caption, "identity", text)
    return CaptionEdit(caption, parsed[0], parsed[1])


def read_caption_edits(path: str | Path) -> Iterator[CaptionEdit]:
    """Reads a JSONL file of human-written caption edits.

    Each line is ``{"input", "edit", "output"}``; ``"caption"`` is accepted for ``"input"``
    (the official files disagree). A bad line raises a ``ValueError`` naming the line and field.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no such caption-edit file: {file}")
    for number, row in read_jsonl_file(file):
        caption = row.get("input", row.get("caption"))
        fields = {"input": caption, "edit": row.get("edit"), "output": row.get("output")}
        for name, value in fields.items():
            if not isinstance(value, str) or not value.strip():
                shown = "input (or caption)" if name == "input" else name
                raise ValueError(f"{file}:{number}: field {shown!r} is missing or empty")
        yield CaptionEdit(
            input=str(fields["input"]),
            instruction=str(fields["edit"]),
            output=str(fields["output"]),
        )
