"""Token bookkeeping for Prompt-to-Prompt: word positions, swap mappers, Needleman–Wunsch."""

from __future__ import annotations

from collections.abc import Sequence
from difflib import SequenceMatcher
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "align_tokens",
    "edited_words",
    "refinement_mapper",
    "swap_mapper",
    "word_token_indices",
]


def _token_pieces(text: str, tokenizer: Any) -> list[list[int]]:
    """Token ids of each space-separated word of ``text`` (no start/end tokens)."""
    return [tokenizer(word, add_special_tokens=False).input_ids for word in text.split(" ")]


def word_token_indices(text: str, word: str | int, tokenizer: Any) -> list[int]:
    """Returns the positions (start token = 0) of a word's tokens in ``text``'s tokenization.

    Args:
        text: the prompt.
        word: a word (every occurrence counts) or its 0-based index among the space-separated words.
        tokenizer: the prompt's tokenizer.

    Raises:
        ValueError: the word is not in the prompt.
    """
    pieces = _token_pieces(text, tokenizer)
    words = text.split(" ")
    if isinstance(word, int):
        if not 0 <= word < len(words):
            raise ValueError(f"word index {word} is outside the {len(words)} words of {text!r}")
        chosen = [word]
    else:
        chosen = [i for i, w in enumerate(words) if w == word]
        if not chosen:
            raise ValueError(f"word {word!r} is not in the prompt {text!r} (words: {words})")
    positions: list[int] = []
    offset = 1  # after the start token
    for index, piece in enumerate(pieces):
        if index in chosen:
            positions.extend(range(offset, offset + len(piece)))
        offset += len(piece)
    return positions


def edited_words(source: str, target: str) -> tuple[list[int], list[int]]:
    """Returns the indices of the words an edit changes in ``source`` and in ``target``.

    The words are the space-separated words that a word-level diff (:mod:`difflib`) does not
    match: replaced, deleted (source only) and inserted (target only) words. A replaced run is
    extended by the unchanged word right after it when both prompts have it, the noun an adjective
    swap describes ("a *red circle*" → "a *green circle*"), so that a blend mask built on them
    covers the object and not just the word that names its colour.

    >>> edited_words("a red circle on a white background", "a green circle on a white background")
    ([1, 2], [1, 2])
    >>> edited_words("a red circle", "a red circle and a blue square")
    ([], [3, 4, 5, 6])
    """
    a, b = source.split(" "), target.split(" ")
    in_source: list[int] = []
    in_target: list[int] = []
    for tag, i1, i2, j1, j2 in SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        in_source.extend(range(i1, i2))
        in_target.extend(range(j1, j2))
        if tag == "replace" and i2 < len(a) and j2 < len(b) and a[i2] == b[j2]:
            in_source.append(i2)
            in_target.append(j2)
    return in_source, in_target


def swap_mapper(source: str, target: str, tokenizer: Any, length: int = 77) -> Tensor:
    """Returns the word-swap mapper ``M`` ``[length, length]`` with ``P_target ≈ P_source M``.

    Prompts must have the same number of words. Unchanged words map token to token; a replaced
    word's source tokens spread evenly over its target tokens (weight 1/len(target tokens)), as
    google/prompt-to-prompt's replacement mapper. After a replaced word whose token counts differ,
    the remaining tokens stay aligned source-to-target (google's mapper falls back to the
    diagonal there, misaligning them).

    Raises:
        ValueError: different word counts, or a prompt longer than ``length`` tokens.
    """
    source_words, target_words = source.split(" "), target.split(" ")
    if len(source_words) != len(target_words):
        raise ValueError(
            "word swap needs prompts with the same number of words, got "
            f"{len(source_words)} in source_prompt and {len(target_words)} in target_prompt"
        )
    source_pieces, target_pieces = (
        _token_pieces(source, tokenizer),
        _token_pieces(target, tokenizer),
    )
    for name, pieces in (("source_prompt", source_pieces), ("target_prompt", target_pieces)):
        if sum(map(len, pieces)) + 2 > length:
            raise ValueError(f"{name} is longer than the text encoder's {length} tokens")
    mapper = torch.zeros(length, length)
    mapper[0, 0] = 1.0
    i = j = 1
    for src, tgt, a, b in zip(
        source_words, target_words, source_pieces, target_pieces, strict=True
    ):
        if src == tgt and len(a) == len(b):
            for k in range(len(a)):
                mapper[i + k, j + k] = 1.0
        else:
            for k in range(len(a)):
                for m in range(len(b)):
                    mapper[i + k, j + m] = 1.0 / len(b)
        i += len(a)
        j += len(b)
    # End token and padding follow position by position.
    while i < length and j < length:
        mapper[i, j] = 1.0
        i += 1
        j += 1
    return mapper


def align_tokens(source: Sequence[int], target: Sequence[int]) -> list[int]:
    """Needleman–Wunsch global alignment (match 1, mismatch −1, gap 0) of two token sequences.

    Returns, for each target position, the aligned source position, or −1 where the target
    token has no counterpart (an inserted word). Ties prefer the diagonal, then a gap in the
    source.
    """
    n, m = len(source), len(target)
    score = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            diagonal = score[i - 1][j - 1] + (1 if source[i - 1] == target[j - 1] else -1)
            score[i][j] = max(diagonal, score[i - 1][j], score[i][j - 1])
    aligned = [-1] * m
    i, j = n, m
    while i > 0 and j > 0:
        match = source[i - 1] == target[j - 1]
        if score[i][j] == score[i - 1][j - 1] + (1 if match else -1) and match:
            aligned[j - 1] = i - 1
            i, j = i - 1, j - 1
        elif score[i][j] == score[i][j - 1]:
            j -= 1
        else:
            i -= 1
    return aligned


def refinement_mapper(
    source: str, target: str, tokenizer: Any, length: int = 77
) -> tuple[Tensor, Tensor]:
    """Returns (mapper ``[length]`` long, alphas ``[length]``) for attention refinement.

    ``mapper[j]`` is the source position aligned with target position ``j`` and ``alphas[j]`` is
    1 where such a position exists, 0 for target tokens with no counterpart (google's
    ``get_refinement_mapper``). Positions past the target's end token map to themselves.
    """
    source_ids = tokenizer(source).input_ids
    target_ids = tokenizer(target).input_ids
    for name, ids in (("source_prompt", source_ids), ("target_prompt", target_ids)):
        if len(ids) > length:
            raise ValueError(f"{name} is longer than the text encoder's {length} tokens")
    aligned = align_tokens(source_ids, target_ids)
    mapper = torch.arange(length)
    alphas = torch.ones(length)
    for j, i in enumerate(aligned):
        mapper[j] = max(i, 0)
        alphas[j] = 1.0 if i >= 0 else 0.0
    return mapper, alphas
