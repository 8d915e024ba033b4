"""Feature caching for diffusers' ``UNet2DConditionModel``: DeepCache (Ma, Fang and Wang,
*DeepCache: Accelerating Diffusion Models for Free*, CVPR 2024).

A UNet's deep blocks change slowly from one denoising step to the next. Every ``interval``-th
call runs the whole UNet and keeps the feature map entering its ``depth`` shallowest up blocks;
the calls between run only the shallowest ``depth`` down blocks (for their skip connections)
and those up blocks, on the kept feature map. With ``interval`` 1 every call is the UNet's own.

:class:`DeepCacheUNet` has the UNet's call signature, so it drops into any denoising loop;
:class:`~instructedit.pipeline.EditPipeline` takes ``cache_interval`` and ``cache_depth``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["DeepCacheUNet"]


class DeepCacheUNet:
    """A UNet whose calls reuse its deep features between full calls (see the module's
    docstring).

    Args:
        unet: a diffusers ``UNet2DConditionModel`` without class embeddings and with no added
            embedding or SDXL's (``"text_time"``): Stable Diffusion 1.x, 2.x and XL layouts,
            InstructPix2Pix editors.
        interval: one call in ``interval`` runs the whole UNet (1: every call).
        depth: how many of the shallowest down and up blocks run on the calls between (1 to
            the number of up blocks minus one; 1 caches the most).

    Attributes:
        calls: calls since the last :meth:`reset`.
        full_calls: of which ran the whole UNet.
    """

    def __init__(self, unet: Any, *, interval: int, depth: int = 1) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"cache_interval must be an integer >= 1, got {interval!r}")
        blocks = len(unet.up_blocks)
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth < blocks:
            raise ValueError(
                f"cache_depth must be an integer from 1 to {blocks - 1} (this UNet has {blocks} "
                f"up blocks), got {depth!r}"
            )
        config = unet.config
        unsupported = [
            name
            for name, value in (
                ("class_embed_type", config.class_embed_type),
                ("num_class_embeds", config.num_class_embeds),
            )
            if value is not None
        ]
        if config.addition_embed_type not in (None, "text_time"):
            unsupported.append("addition_embed_type")
        if unsupported:
            raise ValueError(
                f"feature caching supports UNets without class embeddings and with no added "
                f"embedding or SDXL's ('text_time'); this one "
                f"sets {unsupported}"
            )
        self.unet = unet
        self.interval = interval
        self.depth = depth
        self.calls = 0
        self.full_calls = 0
        self._kept: Tensor | None = None

    def reset(self) -> None:
        """Forgets the kept features: the next call runs the whole UNet."""
        self.calls = 0
        self.full_calls = 0
        self._kept = None

    def __call__(
        self,
        sample: Tensor,
        timestep: Tensor | float | int,
        encoder_hidden_states: Tensor,
        *,
        return_dict: bool = False,
        timestep_cond: Tensor | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        added_cond_kwargs: dict[str, Tensor] | None = None,
    ) -> tuple[Tensor]:
        if self.interval == 1:
            self.calls += 1
            self.full_calls += 1
            output = self.unet(
                sample,
                timestep,
                encoder_hidden_states=encoder_hidden_states,
                timestep_cond=timestep_cond,
                cross_attention_kwargs=cross_attention_kwargs,
                added_cond_kwargs=added_cond_kwargs,
                return_dict=False,
            )
            return (output[0],)
        full = (
            self.calls % self.interval == 0
            or self._kept is None
            or self._kept.shape[0] != sample.shape[0]  # the branches run changed
        )
        self.calls += 1
        self.full_calls += int(full)
        return (
            self._forward(
                sample,
                timestep,
                encoder_hidden_states,
                timestep_cond,
                cross_attention_kwargs,
                added_cond_kwargs,
                full,
            ),
        )

    def _forward(
        self,
        sample: Tensor,
        timestep: Tensor | float | int,
        hidden: Tensor,
        timestep_cond: Tensor | None,
        attention_kwargs: dict[str, Any] | None,
        added_cond_kwargs: dict[str, Tensor] | None,
        full: bool,
    ) -> Tensor:
        """diffusers' ``UNet2DConditionModel.forward`` (for the supported layouts), keeping or
        reusing the features entering the shallowest ``depth`` up blocks."""
        unet = self.unet
        factor = 2**unet.num_upsamplers
        forward_upsample_size = any(size % factor != 0 for size in sample.shape[-2:])
        if unet.config.center_input_sample:
            sample = 2 * sample - 1.0
        emb = unet.time_embedding(
            unet.get_time_embed(sample=sample, timestep=timestep), timestep_cond
        )
        added = unet.get_aug_embed(
            emb=emb, encoder_hidden_states=hidden, added_cond_kwargs=added_cond_kwargs
        )
        if added is not None:  # SDXL's pooled text and size ids
            emb = emb + added
        if unet.time_embed_act is not None:
            emb = unet.time_embed_act(emb)
        hidden = unet.process_encoder_hidden_states(
            encoder_hidden_states=hidden, added_cond_kwargs=added_cond_kwargs
        )
        sample = unet.conv_in(sample)
        skips: tuple[Tensor, ...] = (sample,)
        shallow = len(unet.up_blocks) - self.depth
        for index, block in enumerate(unet.down_blocks):
            if not full and index >= self.depth:
                break
            if getattr(block, "has_cross_attention", False):
                sample, found = block(
                    hidden_states=sample,
                    temb=emb,
                    encoder_hidden_states=hidden,
                    cross_attention_kwargs=attention_kwargs,
                )
            else:
                sample, found = block(hidden_states=sample, temb=emb)
            skips += found
        if full:
            if unet.mid_block is not None:
                if getattr(unet.mid_block, "has_cross_attention", False):
                    sample = unet.mid_block(
                        sample,
                        emb,
                        encoder_hidden_states=hidden,
                        cross_attention_kwargs=attention_kwargs,
                    )
                else:
                    sample = unet.mid_block(sample, emb)
            first = 0
        else:
            needed = sum(len(block.resnets) for block in unet.up_blocks[shallow:])
            skips = skips[:needed]
            assert self._kept is not None
            sample = self._kept
            first = shallow
        for index in range(first, len(unet.up_blocks)):
            block = unet.up_blocks[index]
            if index == shallow and full:
                self._kept = sample
            final = index == len(unet.up_blocks) - 1
            residuals = skips[-len(block.resnets) :]
            skips = skips[: -len(block.resnets)]
            upsample_size = skips[-1].shape[2:] if not final and forward_upsample_size else None
            if getattr(block, "has_cross_attention", False):
                sample = block(
                    hidden_states=sample,
                    temb=emb,
                    res_hidden_states_tuple=residuals,
                    encoder_hidden_states=hidden,
                    cross_attention_kwargs=attention_kwargs,
                    upsample_size=upsample_size,
                )
            else:
                sample = block(
                    hidden_states=sample,
                    temb=emb,
                    res_hidden_states_tuple=residuals,
                    upsample_size=upsample_size,
                )
        if unet.conv_norm_out is not None:
            sample = unet.conv_act(unet.conv_norm_out(sample))
        result: Tensor = unet.conv_out(sample)
        return result

    @property
    def dtype(self) -> torch.dtype:
        """The UNet's dtype."""
        return next(self.unet.parameters()).dtype
