"""Editing image files on disk: the Python entry behind ``instructedit edit``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from PIL import Image
from tqdm.auto import tqdm

from instructedit.guidance import check_scale
from instructedit.images import DEFAULT_MAX_PIXELS, ResizeMode, load_image, save_png_atomic
from instructedit.pipeline._edit import EditPipeline
from instructedit.sampling import SCHEDULERS

__all__ = ["DEFAULT_MODEL", "edit_files"]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "timbrooks/instruct-pix2pix"
"""The released InstructPix2Pix checkpoint (diffusers layout, on the Hugging Face hub)."""

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def edit_files(
    inputs: Sequence[Path],
    *,
    instruction: str,
    output: Path,
    model: str = DEFAULT_MODEL,
    steps: int = 100,
    text_scale: float | None = None,
    image_scale: float | None = None,
    seed: int = 0,
    scheduler: str | None = None,
    device: str = "auto",
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto",
    resize: ResizeMode = "multiple_of_8",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[Path]:
    """Edits image files with one instruction and writes ``OUTPUT/<name>.png`` for each.

    Every input is checked (exists, is a readable image of acceptable size) and every option
    validated before the model loads.

    Args:
        inputs: image files to edit.
        instruction: the edit, e.g. "make it snowy".
        output: folder for the edited images (created if missing).
        model: a pipeline folder in the diffusers layout or a hub id.
        steps: denoising steps.
        text_scale: s_T, how strongly to follow the instruction; by default the model's stored
            guidance (``guidance_config.json``), else the paper's 7.5.
        image_scale: s_I, how strongly to stay with the input image; by default the model's
            stored guidance, else the paper's 1.5.
        seed: seed of the sampling noise (each input is edited with this seed).
        scheduler: replace the model's scheduler, e.g. "euler_ancestral", "ddim", "dpm_solver++".
        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
        dtype: model precision; "auto" is float16 on CUDA and float32 on the CPU.
        resize: "multiple_of_8" (keep the size, floor sides to multiples of 8) or "official"
            (the official CLI's 512 resize and crop).
        max_pixels: largest accepted input (width × height).

    Returns:
        The written files, in input order.
    """
    if not inputs:
        raise ValueError("inputs must name at least one image file")
    if not instruction.strip():
        raise ValueError("instruction must be a non-empty string, e.g. 'make it snowy'")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    for name, value in (("text_scale", text_scale), ("image_scale", image_scale)):
        if value is not None:
            check_scale(name, value)
    if scheduler is not None and scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {sorted(SCHEDULERS)}, got {scheduler!r}")
    if dtype not in ("auto", *_DTYPES):
        raise ValueError(f"dtype must be one of {['auto', *_DTYPES]}, got {dtype!r}")
    images = [
        load_image(path, argument=f"inputs[{i}] ({path})", max_pixels=max_pixels)
        for i, path in enumerate(inputs)
    ]
    stems = [Path(path).stem for path in inputs]
    if len(set(stems)) != len(stems):
        raise ValueError(
            f"inputs must have distinct file names (outputs are named after them), got {stems}"
        )

    resolved_device = torch.device(
        "cuda"
        if device == "auto" and torch.cuda.is_available()
        else ("cpu" if device == "auto" else device)
    )
    resolved_dtype = (
        _DTYPES[dtype]
        if dtype != "auto"
        else (torch.float16 if resolved_device.type == "cuda" else torch.float32)
    )
    logger.info("loading %s on %s (%s)", model, resolved_device, resolved_dtype)
    pipe = EditPipeline.from_pretrained(model, torch_dtype=resolved_dtype, scheduler=scheduler)
    pipe.to(resolved_device)
    output.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for image, stem in zip(
        tqdm(images, desc="images", disable=len(images) == 1), stems, strict=True
    ):
        result = pipe(
            image,
            instruction,
            num_inference_steps=steps,
            guidance_scale=text_scale,
            image_guidance_scale=image_scale,
            generator=torch.Generator(device=resolved_device).manual_seed(seed),
            resize=resize,
            max_pixels=max_pixels,
        )
        edited = result.images[0]
        assert isinstance(edited, Image.Image)  # output_type="pil"
        target = save_png_atomic(edited, output / f"{stem}.png")
        written.append(target)
        logger.info("wrote %s", target)
    return written
