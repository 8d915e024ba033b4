"""One diffusers attention processor that hands controlled calls to a controller, and the context
manager that installs it."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from instructedit.attention._context import AttentionContext, AttentionController, Place, sdpa

__all__ = ["ControlState", "ControlledAttnProcessor", "attention_control"]


@dataclass
class ControlState:
    """Per-run state shared by the installed processors (no module globals).

    The denoising loop updates it through :meth:`set_step` (it is a
    :class:`~instructedit.sampling.StepAware`).
    """

    latent_size: tuple[int, int]
    """Latent (height, width): the queries' resolution is derived from it."""
    num_pairs: int
    """Prompt pairs per guidance branch."""
    step: int = 0
    num_steps: int = 1
    branches: tuple[str, ...] = ("cond",)
    calls: dict[str, int] = field(default_factory=dict)

    def set_step(self, step: int, num_steps: int, branches: tuple[str, ...]) -> None:
        """Records the next UNet call's step and batch layout."""
        self.step, self.num_steps, self.branches = step, num_steps, branches

    def resolution(self, num_queries: int) -> tuple[int, int]:
        """Returns the (height, width) of ``num_queries`` positions at some UNet depth."""
        height, width = self.latent_size
        factor = math.sqrt(height * width / num_queries)
        size = (round(height / factor), round(width / factor))
        if size[0] * size[1] != num_queries:
            # Odd latent sizes round differently per level; fall back to the area alone.
            side = math.isqrt(num_queries)
            size = (side, num_queries // side)
        return size


def _place(layer: str) -> Place:
    if layer.startswith("down_blocks"):
        return "down"
    if layer.startswith("mid_block"):
        return "mid"
    return "up"


class ControlledAttnProcessor:
    """Computes attention like diffusers' ``AttnProcessor2_0``, letting a controller take over.

    Q, K and V are projected and split per head as diffusers does; if the controller
    ``controls`` the call, it computes the output from them, else ``scaled_dot_product_attention``
    does. Everything after (output projection, residual, rescale) is unchanged.
    """

    def __init__(self, layer: str, controller: AttentionController, state: ControlState) -> None:
        self.layer = layer
        self.place = _place(layer)
        self.controller = controller
        self.state = state

    def __call__(
        self,
        attn: Any,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        is_cross = encoder_hidden_states is not None
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        state = self.state
        context = AttentionContext(
            layer=self.layer,
            place=self.place,
            is_cross=is_cross,
            step=state.step,
            num_steps=state.num_steps,
            resolution=state.resolution(query.shape[2]),
            branches=state.branches,
            num_pairs=state.num_pairs,
        )
        if attention_mask is None and self.controller.controls(context):
            # The controllers' maths assumes the default scale 1/√d, as SDPA uses.
            if not math.isclose(attn.scale, head_dim**-0.5, rel_tol=1e-6):
                raise ValueError(
                    f"{self.layer}: controlled attention needs the default scale 1/sqrt(d)"
                )
            hidden_states = self.controller.attend(query, key, value, context)
        elif attention_mask is None:
            hidden_states = sdpa(query, key, value)
        else:
            import torch.nn.functional as F

            hidden_states = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask
            )

        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


@contextmanager
def attention_control(
    unet: Any,
    controller: AttentionController,
    *,
    latent_size: tuple[int, int],
    num_pairs: int = 1,
) -> Iterator[ControlState]:
    """Installs ``controller`` on every attention layer of ``unet`` for the ``with`` block.

    Works on any ``UNet2DConditionModel`` (4 or 8 input channels). The previous processors are
    restored on exit, also when the block raises. Yields the :class:`ControlState` to pass to the
    denoising loop as its ``controller`` (it receives the step and batch layout).

    Args:
        unet: the UNet.
        controller: the attention controller.
        latent_size: (height, width) of the latents being denoised.
        num_pairs: prompt pairs per guidance branch (rows per branch = 2 × num_pairs).
    """
    previous: Mapping[str, Any] = dict(unet.attn_processors)
    state = ControlState(latent_size=latent_size, num_pairs=num_pairs)
    unet.set_attn_processor(
        {name: ControlledAttnProcessor(name, controller, state) for name in previous}
    )
    try:
        yield state
    finally:
        unet.set_attn_processor(dict(previous))
