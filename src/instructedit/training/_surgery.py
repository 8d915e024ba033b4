"""Turning a text-to-image UNet into an InstructPix2Pix UNet (4 → 8 input channels)."""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

import torch

__all__ = ["to_edit_unet"]


def to_edit_unet(
    unet: Any, *, init: Literal["zeros", "copy"] = "zeros", image_scale: float = 1.0
) -> Any:
    """Returns an 8-input-channel copy of ``unet`` for editing; ``unet`` is left untouched.

    The first 4 input channels of ``conv_in`` keep the text-to-image weights. With
    ``init="zeros"`` (the paper's, §3.2) the 4 new ones (the image latent) start at zero, so the
    copy predicts exactly what the original does for any image latent until training changes it.
    With ``init="copy"`` they start as the noisy-latent weights times ``image_scale``: the UNet
    sees the input image from the first step, which a small model trained on few examples needs
    (ShapesWorld's editor learnt to ignore a zero-initialised image). The image latent enters the
    UNet unscaled while the noisy latent is multiplied by the VAE's ``scaling_factor``, so pass
    that factor as ``image_scale`` to give both the same weight. An InstructPix2Pix UNet
    (8 channels already) is copied as is, for fine-tuning.

    Args:
        unet: a diffusers ``UNet2DConditionModel`` with 4 (or 8) input channels.
        init: how the image-latent channels start: ``"zeros"`` or ``"copy"``.
        image_scale: factor on the copied weights (``init="copy"`` only); finite.
    """
    from diffusers import UNet2DConditionModel

    if init not in ("zeros", "copy"):
        raise ValueError(f"init must be 'zeros' or 'copy', got {init!r}")
    if not math.isfinite(image_scale):
        raise ValueError(f"image_scale must be finite, got {image_scale!r}")

    channels = unet.config.in_channels
    if channels == 8:
        return copy.deepcopy(unet)
    if channels != 4:
        raise ValueError(
            f"unet.config.in_channels must be 4 (text-to-image) or 8 (editing), got {channels}"
        )
    config = dict(unet.config)
    config["in_channels"] = 8
    edit = UNet2DConditionModel.from_config(config)
    state = {name: tensor.clone() for name, tensor in unet.state_dict().items()}
    weight = state["conv_in.weight"]
    widened = torch.zeros(weight.shape[0], 8, *weight.shape[2:], dtype=weight.dtype)
    widened[:, :4] = weight
    if init == "copy":
        widened[:, 4:] = weight * image_scale
    state["conv_in.weight"] = widened
    edit.load_state_dict(state)
    edit.to(unet.device)
    if edit.dtype != unet.dtype:
        edit.to(dtype=unet.dtype)
    return edit.train(unet.training)
