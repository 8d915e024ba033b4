"""A rule-based caption editor for domains whose captions follow a grammar."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from instructedit.captions._format import (
    CaptionEdit,
    Rejection,
    check_captions,
    is_identity_edit,
)

__all__ = ["TemplateCaptionEditor", "TemplateRule", "caption_rng"]


def caption_rng(seed: int, caption: str) -> random.Random:
    """The random source of one rule-based caption edit: ``seed``, the caption and one draw from
    torch's global generator.

    A language model samples its edits from torch's global generator; rule-based editors draw
    from it as well, so a caption that occurs twice in a dataset gets two independent edits
    (seeding by the text alone gave every repeat the same one).
    :func:`~instructedit.datagen.generate_dataset` seeds the generator per caption index, so a
    run's edits are reproducible; around a direct call, :func:`~instructedit.seeding.seeded`
    does the same.
    """
    draw = int(torch.randint(0, 2**62, (1,)).item())
    return random.Random(f"{seed}:{draw}:{caption}")


@dataclass(frozen=True)
class TemplateRule:
    """Replace a word class in the caption and describe the change.

    Attributes:
        pattern: a regular expression; its first match in the caption is replaced.
        replacements: candidate replacement texts (one different from the match is drawn).
        instructions: phrasings of the instruction, with ``{old}`` and ``{new}`` placeholders,
            e.g. ``"make the {old} thing {new}"``, ``"turn it {new}"``.
    """

    pattern: str
    replacements: Sequence[str]
    instructions: Sequence[str]

    def __post_init__(self) -> None:
        re.compile(self.pattern)
        if not self.replacements or not self.instructions:
            raise ValueError("a template rule needs at least one replacement and one instruction")


class TemplateCaptionEditor:
    """Edits captions by rules: the first rule whose pattern matches rewrites the caption.

    :meth:`edit` draws each caption's choices from :func:`caption_rng` (``seed``, the caption and
    torch's global generator): a caption that occurs twice gets two independent edits, and the
    same generator state gives the same edits.

    Args:
        rules: tried in order; a caption no rule matches is rejected with reason ``"no_rule"``.
        seed: seed of the random choices.
    """

    def __init__(self, rules: Sequence[TemplateRule], *, seed: int = 0) -> None:
        if not rules:
            raise ValueError("rules must hold at least one TemplateRule")
        self.rules = list(rules)
        self.seed = seed

    def edit_one(self, caption: str, rng: random.Random) -> CaptionEdit | Rejection:
        """Edits one caption with the given random source."""
        matching = [rule for rule in self.rules if re.search(rule.pattern, caption)]
        if not matching:
            return Rejection(caption, "no_rule")
        rule = matching[rng.randrange(len(matching))]
        match = re.search(rule.pattern, caption)
        assert match is not None
        old = match.group(0)
        choices = [r for r in rule.replacements if r != old]
        if not choices:
            return Rejection(caption, "identity")
        new = rng.choice(choices)
        edited = caption[: match.start()] + new + caption[match.end() :]
        if is_identity_edit(caption, edited):
            return Rejection(caption, "identity")
        instruction = rng.choice(list(rule.instructions)).format(old=old, new=new)
        return CaptionEdit(caption, instruction, edited)

    def edit(self, captions: Sequence[str]) -> list[CaptionEdit | Rejection]:
        """Returns one edit or rejection per caption."""
        captions = check_captions(captions)
        return [self.edit_one(c, caption_rng(self.seed, c)) for c in captions]
