"""What a controller knows about the attention call it is asked to handle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from torch import Tensor

__all__ = ["AttentionContext", "AttentionController", "Place", "sdpa"]

Place = Literal["down", "mid", "up"]


@dataclass(frozen=True)
class AttentionContext:
    """One attention call inside the UNet, at one denoising step.

    Attributes:
        layer: the processor's path in the UNet, e.g.
            ``"up_blocks.1.attentions.0.transformer_blocks.0.attn2.processor"``.
        place: ``"down"``, ``"mid"`` or ``"up"``.
        is_cross: cross-attention (keys from the text) or self-attention.
        step: 0-based denoising step.
        num_steps: steps in the run.
        resolution: spatial size (height, width) of the queries.
        branches: guidance branches stacked along the batch, in order (e.g.
            ``("cond", "uncond")``); each holds ``batch // len(branches)`` rows.
        num_pairs: prompt pairs per branch; a branch's rows are ``[sources…, targets…]``.
    """

    layer: str
    place: Place
    is_cross: bool
    step: int
    num_steps: int
    resolution: tuple[int, int]
    branches: tuple[str, ...]
    num_pairs: int

    @property
    def num_queries(self) -> int:
        """Queries per row: ``height × width``."""
        return self.resolution[0] * self.resolution[1]


def sdpa(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """``softmax(Q Kᵀ / √d) V`` with torch's fused kernel; ``[B, H, N, d]`` in, ``[B, H, N, d_v]`` out."""
    import torch.nn.functional as F

    return F.scaled_dot_product_attention(query, key, value)


@runtime_checkable
class AttentionController(Protocol):
    """Changes attention in the layers and steps it chooses (Prompt-to-Prompt and relatives).

    Layers a controller does not claim keep diffusers' fused scaled-dot-product attention.
    Controllers receive queries, keys and values split per head and return the attention output;
    they must not materialise self-attention probabilities.
    """

    def controls(self, context: AttentionContext) -> bool:
        """Whether :meth:`attend` handles this call (otherwise plain SDPA runs)."""
        ...

    def attend(
        self, query: Tensor, key: Tensor, value: Tensor, context: AttentionContext
    ) -> Tensor:
        """Returns the attention output for the whole batch.

        Args:
            query: ``[B, H, N, d]``.
            key: ``[B, H, S, d]`` (S = N for self-attention, the text length for cross).
            value: ``[B, H, S, d]``.
            context: where and when this call happens.

        Returns:
            ``[B, H, N, d]``.
        """
        ...

    def step_end(self, latents: Tensor, step: int, num_steps: int) -> Tensor:
        """Called after every denoising step; may return changed latents (local blending)."""
        ...
