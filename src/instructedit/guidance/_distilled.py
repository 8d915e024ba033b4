"""How a guidance-distilled editor is told its scales (see :mod:`instructedit.training`'s
``GuidanceDistiller``): two sinusoidal embeddings passed as the UNet's ``timestep_cond``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["SCALE_EMBEDDING_DIM", "is_distilled", "scale_embedding"]

SCALE_EMBEDDING_DIM = 128
"""Width of each scale's sinusoidal embedding (a distilled UNet's ``time_cond_proj_dim`` is
twice it)."""


def is_distilled(unet: Any) -> bool:
    """Whether ``unet`` is a guidance-distilled editor (it takes the scales as
    ``timestep_cond``)."""
    return getattr(getattr(unet, "config", None), "time_cond_proj_dim", None) is not None


def scale_embedding(text_scale: Tensor, image_scale: Tensor, dim: int) -> Tensor:
    """``[B, dim]``: the sinusoidal embeddings of s_T and s_I (each ×1000, as diffusers embeds a
    timestep), ``dim / 2`` values each, side by side."""
    from diffusers.models.embeddings import get_timestep_embedding

    if dim % 4 != 0:
        raise ValueError(f"the scale embedding's width must be a multiple of 4, got {dim}")
    half = dim // 2
    parts = [
        get_timestep_embedding(
            torch.as_tensor(scale).float().reshape(-1) * 1000, half, flip_sin_to_cos=True
        )
        for scale in (text_scale, image_scale)
    ]
    return torch.cat(parts, dim=1)
