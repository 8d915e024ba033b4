"""Conditioning dropout with the official semantics (classifier-free guidance training)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["DroppedConditions", "conditioning_dropout"]


@dataclass(frozen=True)
class DroppedConditions:
    """The conditions after dropout, and which were dropped.

    Attributes:
        text: ``[B, T, D]`` text embeddings, dropped rows replaced by the empty prompt's.
        image: ``[B, C, h, w]`` image latents, dropped rows zero.
        text_dropped: ``[B]`` bool.
        image_dropped: ``[B]`` bool.
    """

    text: Tensor
    image: Tensor
    text_dropped: Tensor
    image_dropped: Tensor


def conditioning_dropout(
    text: Tensor,
    image: Tensor,
    empty_text: Tensor,
    probability: float,
    *,
    generator: torch.Generator | None = None,
) -> DroppedConditions:
    """Drops conditions per example as the official training code does.

    With ``r ~ U[0, 1)`` per example and p = ``probability``: r < p drops the text only,
    p ≤ r < 2p drops both, 2p ≤ r < 3p drops the image only (so each condition is dropped with
    probability 2p, both with p). Dropped text is the empty prompt's embedding; a dropped image
    latent is zero.

    Args:
        text: ``[B, T, D]`` instruction embeddings.
        image: ``[B, C, h, w]`` image latents.
        empty_text: ``[1, T, D]`` (or ``[T, D]``) embedding of ``""``.
        probability: p in [0, 1/3].
        generator: source of r (on ``text``'s device).
    """
    if not 0.0 <= probability <= 1.0 / 3.0:
        raise ValueError(f"probability must be in [0, 1/3], got {probability}")
    r = torch.rand(
        text.shape[0], generator=generator, device=generator.device if generator else text.device
    )
    r = r.to(text.device)
    text_dropped = r < 2 * probability
    image_dropped = (r >= probability) & (r < 3 * probability)
    empty = empty_text.reshape(1, *text.shape[1:]).to(text)
    new_text = torch.where(text_dropped.view(-1, 1, 1), empty, text)
    new_image = image * (~image_dropped).to(image.dtype).view(-1, 1, 1, 1)
    return DroppedConditions(new_text, new_image, text_dropped, image_dropped)
