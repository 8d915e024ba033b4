"""Turning a text-to-image UNet into an InstructPix2Pix UNet (4 → 8 input channels)."""

from __future__ import annotations

import copy
from typing import Any

import torch

__all__ = ["to_edit_unet"]


def to_edit_unet(unet: Any) -> Any:
    """Returns an 8-input-channel copy of ``unet`` for editing; ``unet`` is left untouched.

    The first 4 input channels of ``conv_in`` keep the text-to-image weights, the 4 new ones
    (the image latent) start at zero, so the copy predicts exactly what the original does for any
    image latent until training changes it (Brooks et al. 2023, §3.2). An InstructPix2Pix UNet
    (8 channels already) is copied as is, for fine-tuning.

    Args:
        unet: a diffusers ``UNet2DConditionModel`` with 4 (or 8) input channels.
    """
    from diffusers import UNet2DConditionModel

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
    state["conv_in.weight"] = widened
    edit.load_state_dict(state)
    edit.to(unet.device)
    if edit.dtype != unet.dtype:
        edit.to(dtype=unet.dtype)
    return edit.train(unet.training)
