"""The CLIP similarities of InstructPix2Pix's filter, as pure functions."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["directional_similarity", "image_image_similarity", "image_text_similarity"]


def image_text_similarity(image_features: Tensor, text_features: Tensor) -> Tensor:
    """cos(I, T) per row. Features ``[N, D]`` (normalised here). Returns ``[N]``."""
    return F.cosine_similarity(
        F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1), dim=-1
    )


def image_image_similarity(before: Tensor, after: Tensor) -> Tensor:
    """cos(I₀, I₁) per row: how much of the input image the edit keeps. Returns ``[N]``."""
    return F.cosine_similarity(F.normalize(before, dim=-1), F.normalize(after, dim=-1), dim=-1)


def directional_similarity(
    image_before: Tensor, image_after: Tensor, text_before: Tensor, text_after: Tensor
) -> Tensor:
    """cos(I₁ − I₀, T₁ − T₀) per row (Gal et al. 2022, as InstructPix2Pix's filter).

    Each feature is L2-normalised first, as the official code does; the differences are not.
    Returns ``[N]``.
    """
    image_change = F.normalize(image_after, dim=-1) - F.normalize(image_before, dim=-1)
    text_change = F.normalize(text_after, dim=-1) - F.normalize(text_before, dim=-1)
    return F.cosine_similarity(image_change, text_change, dim=-1)
