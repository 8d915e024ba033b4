"""Masks for local edits: reading them, fitting them to an image and to the latent grid, finding
them from the instruction, and pasting the input back outside them.

A mask follows diffusers' inpainting convention: white (1) where the edit may act, black (0)
where the input is kept; grey values are soft.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from instructedit.images import ResizeMode, prepare_image

__all__ = [
    "MaskInput",
    "MaskMethod",
    "diffedit_mask",
    "feather_mask",
    "latent_mask",
    "load_mask",
    "paste_outside",
    "prepare_mask",
]

MaskInput = Image.Image | np.ndarray | Tensor | str | os.PathLike
"""A mask: a PIL image (any mode, read as luminance), an ``[H, W]`` or ``[H, W, 1]`` array
(bool, uint8 or float in [0, 1]), an ``[H, W]`` or ``[1, H, W]`` tensor in [0, 1], or a path to
an image file."""

MaskMethod = Literal["diffedit"]
"""How ``mask_image="auto"`` finds the mask: ``"diffedit"`` compares the noise predictions of the
``full`` and ``image`` branches (with and without the instruction) on noised copies of the input
(Couairon et al., *DiffEdit*, ICLR 2023)."""

DIFFEDIT_STRENGTHS = (0.3, 0.5, 0.7)
"""Noise levels (fractions of the training schedule) of the noised copies DiffEdit compares."""


def _from_array(array: np.ndarray, argument: str) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2:
        raise ValueError(
            f"{argument} must have one channel ([H, W] or [H, W, 1]), got shape {array.shape}"
        )
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ValueError(f"{argument}: a float mask must hold values in [0, 1]")
        array = np.round(array * 255).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise TypeError(f"{argument}: mask dtype must be bool, uint8 or float, got {array.dtype}")
    return Image.fromarray(array, mode="L")


def load_mask(mask: Any, *, argument: str = "mask_image") -> Image.Image:
    """Reads a mask (see :data:`MaskInput`) as a single-channel ``"L"`` image."""
    if isinstance(mask, (str, os.PathLike)):
        path = Path(mask)
        if not path.is_file():
            raise FileNotFoundError(f"{argument}: no such file: {path}")
        try:
            with Image.open(path) as opened:
                opened.load()
                return opened.convert("L")
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"{argument}: {path} is not a readable image ({error})") from None
    if isinstance(mask, Image.Image):
        if mask.width == 0 or mask.height == 0:
            raise ValueError(f"{argument}: mask is empty")
        return mask.convert("L")
    if isinstance(mask, Tensor):
        tensor = mask.detach().cpu()
        if tensor.ndim == 3 and tensor.shape[0] == 1:
            tensor = tensor[0]
        if tensor.ndim != 2:
            raise ValueError(
                f"{argument} must have one channel ([H, W] or [1, H, W]), got shape "
                f"{tuple(mask.shape)}"
            )
        return _from_array(
            tensor.float().numpy() if tensor.is_floating_point() else tensor.numpy(), argument
        )
    if isinstance(mask, np.ndarray):
        return _from_array(mask, argument)
    raise TypeError(
        f"{argument} must be a PIL image, an array, a tensor, a path or 'auto', got "
        f"{type(mask).__name__}"
    )


def prepare_mask(
    mask: Image.Image,
    image_size: tuple[int, int],
    *,
    resize: ResizeMode,
    multiple: int,
    resolution: int,
    argument: str = "mask_image",
) -> Tensor:
    """Fits a mask to an input image as :func:`~instructedit.images.prepare_image` fits the image
    (any mask size of the image's aspect ratio); returns ``[1, 1, H, W]`` in [0, 1].

    Raises ``ValueError`` for a mask of another aspect ratio, and for an all-black mask (nothing
    may change).
    """
    width, height = image_size
    if abs(mask.width * height - mask.height * width) > 0.02 * mask.height * width:
        raise ValueError(
            f"{argument} is {mask.width}×{mask.height}, the image {width}×{height}: a mask must "
            "have the image's aspect ratio (any size)"
        )
    if mask.size != image_size:
        mask = mask.resize(image_size, resample=Image.Resampling.BILINEAR)
    fitted = prepare_image(
        mask, resize=resize, multiple=multiple, resolution=resolution, argument=argument
    )
    tensor = torch.from_numpy(np.asarray(fitted, dtype=np.float32) / 255.0).clamp(0, 1)
    if float(tensor.max()) == 0.0:
        raise ValueError(
            f"{argument} is all black: nothing may change. Paint white where the edit may act"
        )
    return tensor[None, None]


def latent_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """A pixel mask ``[B, 1, H, W]`` averaged onto the latent grid ``size``: each latent cell
    holds the share of its pixels that may change."""
    return F.interpolate(mask, size=size, mode="area")


def _gaussian_kernel(sigma: float) -> Tensor:
    radius = max(1, round(3 * sigma))
    positions = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(positions**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def feather_mask(mask: Tensor, sigma: float) -> Tensor:
    """Softens the edge of ``mask`` ``[B, 1, H, W]`` with a Gaussian of ``sigma`` pixels (0: as it
    is), so a paste along it leaves no seam."""
    if sigma == 0:
        return mask
    kernel = _gaussian_kernel(sigma).to(mask.device, mask.dtype)
    pad = kernel.numel() // 2
    smoothed = F.conv2d(F.pad(mask, (pad, pad, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    smoothed = F.conv2d(
        F.pad(smoothed, (0, 0, pad, pad), mode="replicate"), kernel.view(1, 1, -1, 1)
    )
    return smoothed.clamp(0, 1)


def paste_outside(edited: Tensor, source: Tensor, mask: Tensor) -> Tensor:
    """``mask · edited + (1 − mask) · source``: the input's pixels where the mask is 0."""
    return mask * edited + (1.0 - mask) * source


def diffedit_mask(
    unet: Callable[..., Any],
    scheduler: Any,
    clean_latents: Tensor,
    image_latents: Tensor,
    text: Tensor,
    negative: Tensor,
    *,
    threshold: float,
    generator: torch.Generator | list[torch.Generator] | None = None,
    strengths: tuple[float, ...] = DIFFEDIT_STRENGTHS,
) -> Tensor:
    """Finds where an instruction acts (DiffEdit, Couairon et al., ICLR 2023): the mean absolute
    difference, over channels and over noised copies of the input, between the noise predicted
    with the instruction (the ``full`` branch) and without it (the ``image`` branch).

    Each image's difference map is divided by its maximum, kept where it reaches ``threshold``,
    dilated by one latent cell and smoothed over 3 × 3 cells.

    Args:
        unet: the editing UNet's forward (``unet(x, t, encoder_hidden_states=...)``).
        scheduler: a scheduler with the training schedule's ``alphas_cumprod``, or an EDM
            scheduler (``EDMEulerScheduler``, ``EDMDPMSolverMultistepScheduler``): the copies are
            then ``x + σ·ε`` at its σ schedule's fractions, preconditioned as it samples.
        clean_latents: the input's latents in sampling space ``[B, C, h, w]``.
        image_latents: the image condition ``[B, C, h, w]``.
        text: the instruction's embeddings ``[B, T, D]``.
        negative: the empty (or negative) instruction's embeddings ``[B, T, D]``.
        threshold: share of each map's maximum, in [0, 1].
        generator: draws the noise of the copies.
        strengths: noise levels of the copies, as fractions of the training schedule.

    Returns:
        The mask on the latent grid, ``[B, 1, h, w]`` in [0, 1].
    """
    from diffusers.utils.torch_utils import randn_tensor

    alphas: Tensor | None = getattr(scheduler, "alphas_cumprod", None)
    # An EDM schedule has σ only, from σ_max down; a fraction s of the noise is the σ a share s
    # of the training schedule (a fresh scheduler's) from its clean end.
    sigmas: Tensor | None = None
    if alphas is None:
        if not hasattr(scheduler, "precondition_inputs"):
            raise ValueError(
                f"mask_image='auto' needs a scheduler with ᾱ (alphas_cumprod) or an EDM one, got "
                f"{type(scheduler).__name__}: pass a mask, or another scheduler"
            )
        training = type(scheduler).from_config(scheduler.config).sigmas
        sigmas = training[training > 0].flip(0)
        steps = len(sigmas)
    else:
        steps = len(alphas)
    batch = clean_latents.shape[0]
    difference = torch.zeros(
        (batch, 1, *clean_latents.shape[2:]), device=clean_latents.device, dtype=torch.float32
    )
    hidden = torch.cat([text, negative])
    for strength in strengths:
        step = min(steps - 1, int(strength * steps))
        noise = randn_tensor(
            clean_latents.shape,
            generator=generator,
            device=clean_latents.device,
            dtype=clean_latents.dtype,
        )
        if sigmas is None:
            assert alphas is not None
            alpha = alphas[step].to(clean_latents.device, torch.float32)
            noised = alpha.sqrt() * clean_latents.float() + (1 - alpha).sqrt() * noise.float()
            timestep = torch.tensor(step, device=clean_latents.device)
        else:
            sigma = sigmas[step].to(clean_latents.device, torch.float32)
            noised = scheduler.precondition_inputs(clean_latents.float() + sigma * noise, sigma)
            timestep = scheduler.precondition_noise(sigma).to(clean_latents.device)
        noised = noised.to(clean_latents.dtype)
        model_input = torch.cat([noised, image_latents], dim=1).repeat(2, 1, 1, 1)
        output = unet(model_input, timestep, encoder_hidden_states=hidden, return_dict=False)[0]
        full, image = output.float().chunk(2)
        difference += (full - image).abs().mean(dim=1, keepdim=True)
    peak = difference.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
    kept = (difference / peak >= threshold).float()
    dilated = F.max_pool2d(kept, kernel_size=3, stride=1, padding=1)
    return F.avg_pool2d(dilated, kernel_size=3, stride=1, padding=1, count_include_pad=False)
