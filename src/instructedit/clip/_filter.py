"""ClipDirectionalFilter: InstructPix2Pix's CLIP-based filtering of generated pairs."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from instructedit._inputs import check_positive_int, check_texts
from instructedit.clip._scorer import ClipScorer
from instructedit.clip._similarity import (
    directional_similarity,
    image_image_similarity,
    image_text_similarity,
)
from instructedit.clip._structure import structure_similarity
from instructedit.images import ImageInput

__all__ = [
    "ClipDirectionalFilter",
    "ClipScores",
    "FilterResult",
    "check_similarity_threshold",
    "check_structure_threshold",
]


@dataclass(frozen=True)
class ClipScores:
    """The four CLIP similarities of each pair, ``[N]`` each, and the structure similarity
    when the filter checks it."""

    image_similarity: Tensor
    """cos(I₀, I₁): consistency of the edited image with the input."""
    direction_similarity: Tensor
    """cos(I₁ − I₀, T₁ − T₀): does the image change the way the caption does."""
    text_similarity_before: Tensor
    """cos(I₀, T₀): does the input image show its caption."""
    text_similarity_after: Tensor
    """cos(I₁, T₁): does the edited image show the edited caption."""
    structure_similarity: Tensor | None = None
    """:func:`~instructedit.clip.structure_similarity` (not CLIP: edges kept in place), when
    the filter checks it."""


@dataclass(frozen=True)
class FilterResult:
    """What :class:`ClipDirectionalFilter` returns.

    Attributes:
        keep: ``[N]`` bool, the pairs that clear every threshold.
        scores: the similarities judged.
        reasons: per pair, ``None`` if kept, else the first failed criterion
            (``"image_similarity"``, ``"structure_similarity"``, ``"direction_similarity"``,
            ``"text_similarity"``).
    """

    keep: Tensor
    scores: ClipScores
    reasons: list[str | None]

    def counts(self) -> Counter[str]:
        """Kept and dropped pairs per reason."""
        return Counter("kept" if r is None else r for r in self.reasons)


def check_structure_threshold(value: float | None, name: str = "min_structure_similarity") -> None:
    """Refuses a structure threshold that is not ``None`` or a number in [0, 1]."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number in [0, 1] or None, got {value!r}")
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1] or None, got {value}")


def check_similarity_threshold(name: str, value: float) -> None:
    """Refuses a CLIP threshold that is not a cosine similarity, a number in [-1, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a cosine similarity in [-1, 1], got {value!r}")
    if not math.isfinite(value) or not -1.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a cosine similarity in [-1, 1], got {value}")


class ClipDirectionalFilter:
    """Keeps generated pairs whose CLIP similarities clear the paper's thresholds.

    Brooks et al. 2023, §3.1.2: keep a pair if cos(I₀, I₁) ≥ ``min_image_similarity`` (0.75; the
    official script used 0.70), cos(I₁ − I₀, T₁ − T₀) ≥ ``min_direction_similarity`` (0.2) and
    both image–caption similarities ≥ ``min_text_similarity`` (0.2); rank survivors by
    directional similarity and keep the top 4 per caption pair (:meth:`top_k`).

    Beyond the paper, ``min_structure_similarity`` also asks that the pair keep the input's
    edges in place (:func:`~instructedit.clip.structure_similarity`, computed from the pixels):
    a small CLIP's image-image similarity does not see a layout that moved.

    Args:
        scorer: the CLIP features (ViT-L/14 in the paper).
        min_image_similarity: threshold on cos(I₀, I₁).
        min_direction_similarity: threshold on the directional similarity.
        min_text_similarity: threshold on cos(I₀, T₀) and cos(I₁, T₁).
        min_structure_similarity: threshold on the structure similarity, in [0, 1]; ``None``
            (default, the paper's filter): not checked, nor computed.
    """

    def __init__(
        self,
        scorer: ClipScorer,
        min_image_similarity: float = 0.75,
        min_direction_similarity: float = 0.2,
        min_text_similarity: float = 0.2,
        min_structure_similarity: float | None = None,
    ) -> None:
        check_similarity_threshold("min_image_similarity", min_image_similarity)
        check_similarity_threshold("min_direction_similarity", min_direction_similarity)
        check_similarity_threshold("min_text_similarity", min_text_similarity)
        check_structure_threshold(min_structure_similarity)
        self.scorer = scorer
        self.min_image_similarity = min_image_similarity
        self.min_direction_similarity = min_direction_similarity
        self.min_text_similarity = min_text_similarity
        self.min_structure_similarity = min_structure_similarity

    def score(
        self,
        before_images: Sequence[ImageInput],
        after_images: Sequence[ImageInput],
        before_captions: Sequence[str],
        after_captions: Sequence[str],
    ) -> ClipScores:
        """Computes the four similarities of each pair (images and captions batched), and the
        structure similarity when the filter checks it. No pairs give ``[0]`` tensors."""
        lists = {
            "before_images": before_images,
            "after_images": after_images,
            "before_captions": before_captions,
            "after_captions": after_captions,
        }
        for name, items in lists.items():
            if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
                raise TypeError(
                    f"{name} must be a list with one entry per pair, got {type(items).__name__}"
                )
        count = len(before_images)
        for name, items in lists.items():
            if len(items) != count:
                raise ValueError(f"{name} has {len(items)} entries, before_images has {count}")
        check_texts(before_captions, "before_captions", allow_empty=True)
        check_texts(after_captions, "after_captions", allow_empty=True)
        if count == 0:
            empty = torch.empty(0)
            return ClipScores(
                image_similarity=empty,
                direction_similarity=empty,
                text_similarity_before=empty,
                text_similarity_after=empty,
                structure_similarity=None if self.min_structure_similarity is None else empty,
            )
        images = self.scorer.encode_images([*before_images, *after_images])
        # Captions repeat across the samples of one caption pair: encode each distinct text once.
        unique = list(dict.fromkeys([*before_captions, *after_captions]))
        encoded = self.scorer.encode_texts(unique)
        lookup = {text: encoded[i] for i, text in enumerate(unique)}
        text_before = torch.stack([lookup[t] for t in before_captions])
        text_after = torch.stack([lookup[t] for t in after_captions])
        image_before, image_after = images[:count], images[count:]
        return ClipScores(
            image_similarity=image_image_similarity(image_before, image_after),
            direction_similarity=directional_similarity(
                image_before, image_after, text_before, text_after
            ),
            text_similarity_before=image_text_similarity(image_before, text_before),
            text_similarity_after=image_text_similarity(image_after, text_after),
            structure_similarity=(
                None
                if self.min_structure_similarity is None
                else structure_similarity(before_images, after_images)
            ),
        )

    def judge(self, scores: ClipScores) -> FilterResult:
        """Applies the thresholds (a value equal to a threshold passes).

        Raises:
            ValueError: the filter checks the structure similarity and ``scores`` lack it.
        """
        structure = scores.structure_similarity
        if self.min_structure_similarity is not None and structure is None:
            raise ValueError(
                "min_structure_similarity is set but scores.structure_similarity is None: "
                "compute it with score() or structure_similarity()"
            )
        reasons: list[str | None] = []
        for i in range(len(scores.image_similarity)):
            if scores.image_similarity[i] < self.min_image_similarity:
                reasons.append("image_similarity")
            elif (
                self.min_structure_similarity is not None
                and structure is not None
                and structure[i] < self.min_structure_similarity
            ):
                reasons.append("structure_similarity")
            elif scores.direction_similarity[i] < self.min_direction_similarity:
                reasons.append("direction_similarity")
            elif (
                min(scores.text_similarity_before[i], scores.text_similarity_after[i])
                < self.min_text_similarity
            ):
                reasons.append("text_similarity")
            else:
                reasons.append(None)
        keep = torch.tensor([r is None for r in reasons], dtype=torch.bool)
        return FilterResult(keep=keep, scores=scores, reasons=reasons)

    def __call__(
        self,
        before_images: Sequence[ImageInput],
        after_images: Sequence[ImageInput],
        before_captions: Sequence[str],
        after_captions: Sequence[str],
    ) -> FilterResult:
        """Scores and judges pairs; ``result.keep[i]`` says whether pair i is kept."""
        return self.judge(self.score(before_images, after_images, before_captions, after_captions))

    @staticmethod
    def top_k(
        result: FilterResult, groups: Sequence[Hashable] | None = None, k: int = 4
    ) -> list[int]:
        """Indices of kept pairs, best directional similarity first, at most ``k`` per group.

        Args:
            result: a filter result.
            groups: the caption pair of each sample (all one group if ``None``).
            k: kept per group (the official run keeps at most 4 of 100).
        """
        check_positive_int(k, "k")
        labels = list(groups) if groups is not None else [0] * len(result.reasons)
        if len(labels) != len(result.reasons):
            raise ValueError(
                f"groups has {len(labels)} entries for the {len(result.reasons)} pairs of result"
            )
        order = sorted(
            (i for i in range(len(labels)) if result.reasons[i] is None),
            key=lambda i: (-float(result.scores.direction_similarity[i]), i),
        )
        taken: Counter[Hashable] = Counter()
        chosen = []
        for index in order:
            if taken[labels[index]] < k:
                taken[labels[index]] += 1
                chosen.append(index)
        return chosen
