"""EditPipeline's size, cost and input checks, and its one-branch mode for distilled editors."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from instructedit._inputs import as_list, check_positive_int
from instructedit._memory import MemoryTools
from instructedit.components import native_size, vae_scale_factor
from instructedit.guidance import DualGuidance, is_distilled, scale_embedding
from instructedit.images import ResizeMode, prepared_size
from instructedit.pipeline._cost import CostEstimate, check_fits, estimate_cost
from instructedit.pipeline._masks import load_mask, prepare_mask

__all__ = ["EditChecks"]

logger = logging.getLogger(__name__)


class EditChecks(MemoryTools):
    """The part of :class:`~instructedit.pipeline.EditPipeline` that sizes, costs and checks an
    edit before any model runs (a mixin of the pipeline)."""

    guidance: DualGuidance

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent along each side."""
        return vae_scale_factor(self.vae)

    @property
    def native_size(self) -> int:
        """The side, in pixels, the model was trained at: the UNet's ``sample_size`` times
        :attr:`vae_scale_factor` (32 for the embedded default, 512 for SD 1.5 editors)."""
        return native_size(self.unet, self.vae)

    def estimate(
        self,
        image_size: tuple[int, int],
        *,
        batch: int = 1,
        steps: int = 100,
        guidance_scale: float | None = None,
        image_guidance_scale: float | None = None,
        resize: ResizeMode = "multiple_of_8",
    ) -> CostEstimate:
        """What editing ``batch`` images of ``image_size`` (width, height, before resizing)
        costs: UNet evaluations, the largest attention, and a peak memory estimate on this
        pipeline's device with its memory tools (see :class:`~instructedit.pipeline.CostEstimate`).
        Runs no model."""
        check_positive_int(batch, "batch")
        check_positive_int(steps, "steps")
        width, height = image_size
        size = prepared_size(
            width,
            height,
            resize=resize,
            multiple=max(8, self.vae_scale_factor),
            resolution=self.native_size if resize == "native" else 512,
        )
        guidance = self.guidance.with_scales(
            text_scale=guidance_scale, image_scale=image_guidance_scale
        )
        if is_distilled(self.unet):
            guidance = guidance.with_scales(text_scale=1.0, image_scale=1.0)
        return estimate_cost(self, *size, outputs=batch, steps=steps, guidance=guidance)

    def _distilled(
        self, forward: Callable[..., Any], guidance: DualGuidance
    ) -> tuple[Callable[..., Any], DualGuidance]:
        """For a guidance-distilled editor: a forward that passes the requested scales as the
        UNet's ``timestep_cond``, and the guidance that runs its one (``full``) branch."""
        condition = scale_embedding(
            torch.tensor([guidance.text_scale]),
            torch.tensor([guidance.image_scale]),
            self.unet.config.time_cond_proj_dim,
        ).to(self.device, self.dtype)

        def told(sample: Tensor, timestep: Any, **kwargs: Any) -> Any:
            kwargs["timestep_cond"] = condition.expand(sample.shape[0], -1)
            return forward(sample, timestep, **kwargs)

        return told, guidance.with_scales(text_scale=1.0, image_scale=1.0)

    def _check_cost(
        self,
        size: tuple[int, int],
        outputs: int,
        steps: int,
        text_scale: float | None,
        image_scale: float | None,
    ) -> None:
        """Warns about an image far above the native size; on CUDA, refuses an edit whose
        estimate exceeds the free memory (before any model runs)."""
        cost = self.estimate(
            size,
            batch=outputs,
            steps=steps,
            guidance_scale=text_scale,
            image_guidance_scale=image_scale,
        )
        if cost.area_factor > 16:
            logger.warning(
                "the image is %d×%d, %.0f× the area this model was trained at (%d×%d): the "
                "edit's cost grows with the square of the area (%s). resize='native' edits at "
                "the native size",
                cost.width,
                cost.height,
                cost.area_factor,
                self.native_size,
                self.native_size,
                cost,
            )
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            check_fits(cost, free)

    def _check_image_latents(
        self, image_latents: Tensor | None, size: tuple[int, int], count: int
    ) -> None:
        """Raises ``ValueError`` unless ``image_latents`` is ``None`` or ``[1 or count, C, h, w]``
        at the prepared image's ``size`` (width, height) on the latent grid."""
        if image_latents is None:
            return
        if not isinstance(image_latents, Tensor):
            raise TypeError(
                f"image_latents must be a tensor [N, C, h, w], got {type(image_latents).__name__}"
            )
        factor = self.vae_scale_factor
        grid = (self.vae.config.latent_channels, size[1] // factor, size[0] // factor)
        shape = tuple(image_latents.shape)
        if len(shape) != 4 or shape[0] not in (1, count) or shape[1:] != grid:
            allowed = " or ".join(str((n, *grid)) for n in sorted({1, count}))
            raise ValueError(
                f"image_latents must have shape {allowed} (the image is {size[0]}×{size[1]} "
                f"after resizing), got {shape}"
            )

    def _prepare_masks(
        self,
        mask_image: Any,
        images: Sequence[Image.Image],
        count: int,
        *,
        resize: ResizeMode,
        multiple: int,
        resolution: int,
    ) -> Tensor | None:
        """The given masks fitted to the images, ``[count, 1, H, W]`` in [0, 1]; ``None`` for no
        mask or ``"auto"`` (found later, from the models)."""
        if mask_image is None or (isinstance(mask_image, str) and mask_image == "auto"):
            return None
        masks = as_list(mask_image, "mask_image")
        if len(masks) not in (1, count):
            raise ValueError(f"mask_image has {len(masks)} masks, expected 1 or {count}")
        names = ["mask_image"] if len(masks) == 1 else [f"mask_image[{i}]" for i in range(count)]
        read = [load_mask(mask, argument=name) for mask, name in zip(masks, names, strict=True)]
        fitted = []
        for index in range(count):
            image = images[index % len(images)]
            fitted.append(
                prepare_mask(
                    read[index % len(read)],
                    image.size,
                    resize=resize,
                    multiple=multiple,
                    resolution=resolution,
                    argument=names[index % len(names)],
                )
            )
        return torch.cat(fitted)
