"""The CLIP similarities of InstructPix2Pix's filter, as pure functions."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["directional_similarity", "image_image_similarity", "image_text_similarity"]


def _check_features(**features: Tensor) -> None:
    """Raises naming the argument unless every feature tensor is ``[N, D]`` with the same N and D
    (N = 0 included: no rows give no similarities)."""
    shapes = {}
    for name, value in features.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a [N, D] tensor, got {type(value).__name__}")
        if value.ndim != 2:
            raise ValueError(f"{name} must be a [N, D] tensor, got shape {tuple(value.shape)}")
        shapes[name] = tuple(value.shape)
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"features must share one [N, D] shape, got {listed}")


def image_text_similarity(image_features: Tensor, text_features: Tensor) -> Tensor:
    """cos(I, T) per row. Features ``[N, D]`` (normalised here). Returns ``[N]``."""
    _check_features(image_features=image_features, text_features=text_features)
    return F.cosine_similarity(
        F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1), dim=-1
    )


def image_image_similarity(before: Tensor, after: Tensor) -> Tensor:
    """cos(I₀, I₁) per row: how much of the input image the edit keeps. Returns ``[N]``."""
    _check_features(before=before, after=after)
    return F.cosine_similarity(F.normalize(before, dim=-1), F.normalize(after, dim=-1), dim=-1)


def directional_similarity(
    image_before: Tensor, image_after: Tensor, text_before: Tensor, text_after: Tensor
) -> Tensor:
    """cos(I₁ − I₀, T₁ − T₀) per row (Gal et al. 2022, as InstructPix2Pix's filter).

    Each feature is L2-normalised first, as the official code does; the differences are not.
    Returns ``[N]``.
    """
    _check_features(
        image_before=image_before,
        image_after=image_after,
        text_before=text_before,
        text_after=text_after,
    )
    image_change = F.normalize(image_after, dim=-1) - F.normalize(image_before, dim=-1)
    text_change = F.normalize(text_after, dim=-1) - F.normalize(text_before, dim=-1)
    return F.cosine_similarity(image_change, text_change, dim=-1)
