"""Cross-attention maps as an image grid, one tile per token."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from torch import Tensor

__all__ = ["attention_grid"]


def attention_grid(
    maps: Tensor, prompt: str, tokenizer: Any, *, tile: int = 96, row: int = 0
) -> Image.Image:
    """Renders per-token cross-attention maps of one prompt as a labelled grid.

    Args:
        maps: ``[rows, h, w, S]`` from :meth:`AttentionStore.aggregate`.
        prompt: the prompt of ``row`` (its tokens label the tiles).
        tokenizer: the prompt's tokenizer.
        tile: tile side in pixels.
        row: which row of ``maps`` to draw.

    Returns:
        An RGB image: one tile per token (start token excluded, end token included), each map
        normalised to its own maximum and drawn with a black-to-yellow colour ramp.
    """
    ids = tokenizer(prompt).input_ids
    tokens = [tokenizer.decode([i]) for i in ids]
    count = len(ids) - 1
    if count < 1:
        raise ValueError("prompt has no tokens to show")
    label = 16
    grid = Image.new("RGB", (tile * count, tile + label), "white")
    draw = ImageDraw.Draw(grid)
    selected = maps[row].float().cpu()
    for column, position in enumerate(range(1, len(ids))):
        heat = selected[..., position]
        heat = heat / heat.max().clamp_min(1e-12)
        values = heat.numpy()
        rgb = np.stack([values, values * 0.85, values * 0.1], axis=-1)
        image = Image.fromarray((rgb * 255).round().astype(np.uint8)).resize(
            (tile, tile), Image.Resampling.BICUBIC
        )
        grid.paste(image, (column * tile, 0))
        text = tokens[position].strip()[:12] or "·"
        draw.text((column * tile + 3, tile + 2), text, fill="black")
    return grid
