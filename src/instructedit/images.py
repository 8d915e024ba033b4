"""Loading and sizing images: any PIL mode, EXIF orientation, paths, arrays, tensors.

Shared by every stage that reads pictures (editing, real-image inversion, datasets).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageInput",
    "ResizeMode",
    "load_image",
    "official_size",
    "pil_to_tensor",
    "prepare_image",
    "prepared_size",
    "save_png_atomic",
    "tensor_to_output",
]

ImageInput = Image.Image | np.ndarray | Tensor | str | os.PathLike
"""A PIL image, an ``[H, W]`` / ``[H, W, C]`` array (uint8, uint16 or float in [0, 1]), a
``[C, H, W]`` tensor in [0, 1], or a path to an image file."""

ResizeMode = Literal["multiple_of_8", "official", "native"]

DEFAULT_MAX_PIXELS = 2048 * 2048
"""Largest input accepted by default (width × height), before any model runs."""

_RESAMPLE = Image.Resampling.LANCZOS


def _from_array(array: np.ndarray, argument: str) -> Image.Image:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] not in (1, 3, 4):
        raise ValueError(f"{argument}: arrays must be [H, W] or [H, W, C], got shape {array.shape}")
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ValueError(
            f"{argument}: arrays must be [H, W] or [H, W, C] with C in 1, 3, 4, got {array.shape}"
        )
    if array.dtype == np.uint8:
        scaled = array
    elif array.dtype == np.uint16:
        scaled = np.round(array.astype(np.float64) / 257.0).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError(f"{argument}: array holds NaN or infinite values")
        scaled = np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        raise TypeError(
            f"{argument}: array dtype must be uint8, uint16 or float, got {array.dtype}"
        )
    if scaled.ndim == 3 and scaled.shape[2] == 1:
        scaled = scaled[:, :, 0]
    return Image.fromarray(scaled)


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    array = np.asarray(image)
    if image.mode == "F":
        peak = float(array.max()) if array.size else 1.0
        scaled = np.clip(array / (peak if peak > 1.0 else 1.0), 0.0, 1.0) * 255.0
    else:
        scaled = (
            array.astype(np.float64) / (65535.0 if array.max(initial=0) > 255 else 255.0) * 255.0
        )
    return Image.fromarray(np.round(scaled).astype(np.uint8)).convert("RGB")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Converts any PIL mode to RGB: transparency is composited over white, 16-bit is scaled."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _sixteen_bit_to_rgb(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(
    image: ImageInput, *, argument: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Returns ``image`` as an upright RGB PIL image, or raises a clear error.

    EXIF orientation is applied; RGBA, LA and palette images are composited over white;
    grayscale, CMYK and 16-bit images are converted to 8-bit RGB.

    Args:
        image: see :data:`ImageInput`.
        argument: the name used in error messages (e.g. ``"image[2]"``).
        max_pixels: largest accepted width × height.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: not an image, a corrupt file, an empty image, or more than ``max_pixels``.
        TypeError: an unsupported type.
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"{argument}: no such file: {path}")
        try:
            with Image.open(path) as opened:
                opened.load()
                transposed = ImageOps.exif_transpose(opened)
                pil = transposed if transposed is not None else opened.copy()
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            raise ValueError(f"{argument}: {path} is not a readable image ({error})") from error
    elif isinstance(image, Image.Image):
        pil = image
    elif isinstance(image, np.ndarray):
        pil = _from_array(image, argument)
    elif isinstance(image, Tensor):
        if image.ndim != 3 or image.shape[0] not in (1, 3, 4):
            raise ValueError(
                f"{argument}: tensors must be [C, H, W] with C in 1, 3, 4, got {tuple(image.shape)}"
            )
        pil = _from_array(image.detach().float().cpu().permute(1, 2, 0).numpy(), argument)
    else:
        raise TypeError(
            f"{argument} must be a PIL image, a numpy array, a [C, H, W] tensor or a path, "
            f"got {type(image).__name__}"
        )
    width, height = pil.size
    if width == 0 or height == 0:
        raise ValueError(f"{argument}: image is empty ({width}×{height})")
    if width * height > max_pixels:
        raise ValueError(
            f"{argument}: {width}×{height} = {width * height} pixels exceeds max_pixels={max_pixels}; "
            "downscale it or raise max_pixels"
        )
    upright = ImageOps.exif_transpose(pil)
    return _to_rgb(upright if upright is not None else pil)


def official_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """The official InstructPix2Pix resize rule (``edit_cli.py``).

    Scale so the long side is ``resolution``, round the short side *up* to a multiple of 64,
    then floor both sides to multiples of 64. The long side can exceed ``resolution``
    (768×512 at 512 gives 576×384).
    """
    factor = resolution / max(width, height)
    factor = math.ceil(min(width, height) * factor / 64) * 64 / min(width, height)
    new_width = int((width * factor) // 64) * 64
    new_height = int((height * factor) // 64) * 64
    return new_width, new_height


def prepared_size(
    width: int,
    height: int,
    *,
    resize: ResizeMode = "multiple_of_8",
    multiple: int = 8,
    resolution: int = 512,
) -> tuple[int, int]:
    """The size :func:`prepare_image` gives a ``width`` × ``height`` image (sides of 0 mean
    it is too small)."""
    if resize == "official":
        return official_size(width, height, resolution)
    if resize == "native":
        factor = resolution / max(width, height)
        width, height = max(1, round(width * factor)), max(1, round(height * factor))
    elif resize != "multiple_of_8":
        raise ValueError(f"resize must be 'multiple_of_8', 'native' or 'official', got {resize!r}")
    return width - width % multiple, height - height % multiple


def prepare_image(
    image: Image.Image,
    *,
    resize: ResizeMode = "multiple_of_8",
    multiple: int = 8,
    resolution: int = 512,
    argument: str = "image",
) -> Image.Image:
    """Sizes an RGB image for the VAE.

    Args:
        image: an RGB image (see :func:`load_image`).
        resize: ``"multiple_of_8"`` floors each side to a multiple of ``multiple`` and resizes
            (Lanczos) only if needed — diffusers' rule, which keeps the aspect ratio within
            ``multiple`` pixels; ``"native"`` scales the long side to ``resolution`` (a model's
            native size), keeping the aspect ratio, then floors the sides the same way;
            ``"official"`` applies :func:`official_size` at ``resolution`` with
            ``ImageOps.fit`` (Lanczos, centre crop), as the official ``edit_cli.py``.
        multiple: side multiple (the VAE's downsampling factor, at least 8).
        resolution: target long side for ``"native"`` and ``"official"``.
        argument: the name used in error messages.
    """
    width, height = image.size
    size = prepared_size(width, height, resize=resize, multiple=multiple, resolution=resolution)
    if resize == "official":
        if min(size) < 64:
            raise ValueError(f"{argument}: {width}×{height} is too small for resize='official'")
        return ImageOps.fit(image, size, method=_RESAMPLE)
    if min(size) == 0:
        raise ValueError(
            f"{argument}: {width}×{height} is smaller than the minimum side {multiple}"
        )
    return image if size == (width, height) else image.resize(size, resample=_RESAMPLE)


def pil_to_tensor(images: Sequence[Image.Image]) -> Tensor:
    """Stacks same-sized RGB images into ``[B, 3, H, W]`` in [-1, 1] (float32)."""
    arrays = np.stack([np.asarray(image, dtype=np.float32) / 255.0 for image in images])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).mul(2.0).sub(1.0)


def tensor_to_output(decoded: Tensor, output_type: str) -> list[Image.Image] | np.ndarray | Tensor:
    """Converts VAE output ``[B, 3, H, W]`` in [-1, 1] to ``"pt"``, ``"np"`` or ``"pil"`` images."""
    images = (decoded / 2 + 0.5).clamp(0, 1)
    if output_type == "pt":
        return images
    array = images.cpu().permute(0, 2, 3, 1).float().numpy()
    if output_type == "np":
        return array
    return [Image.fromarray(frame) for frame in (array * 255).round().astype("uint8")]


def save_png_atomic(image: Image.Image, path: str | os.PathLike[str]) -> Path:
    """Writes ``image`` as a PNG through a hidden ``.partial`` file renamed into place, so a
    reader never sees half an image; returns ``path``."""
    target = Path(path)
    staging = target.with_name(f".{target.name}.partial")
    image.save(staging, format="PNG")
    staging.replace(target)
    return target
