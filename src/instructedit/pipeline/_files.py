"""Editing image files on disk: the Python entry behind ``instructedit edit``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal, get_args

import torch
from PIL import Image
from tqdm.auto import tqdm

from instructedit._inputs import REPEATED
from instructedit.guidance import check_scale
from instructedit.images import (
    DEFAULT_MAX_PIXELS,
    ResizeMode,
    load_image,
    prepared_size,
    save_png_atomic,
)
from instructedit.pipeline._edit import EditPipeline
from instructedit.pipeline._masks import load_mask, prepare_mask
from instructedit.pipeline._session import Chain, EditSession
from instructedit.sampling import SCHEDULERS

__all__ = ["DEFAULT_MODEL", "edit_files"]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "timbrooks/instruct-pix2pix"
"""The released InstructPix2Pix checkpoint (diffusers layout, on the Hugging Face hub)."""

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def edit_files(
    inputs: Sequence[Path],
    *,
    instruction: Annotated[Sequence[str], REPEATED],
    output: Path,
    model: str = DEFAULT_MODEL,
    steps: int = 100,
    text_scale: float | None = None,
    image_scale: float | None = None,
    seed: int = 0,
    scheduler: str | None = None,
    device: str = "auto",
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto",
    resize: SizePolicy = "auto",
    restore_size: bool = False,
    dry_run: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    mask: str | None = None,
    keep_unmasked_pixels: bool | None = None,
    chain: Chain = "pixels",
) -> list[Path] | list[str]:
    """Edits image files by one instruction, or several in turns, and writes
    ``OUTPUT/<name>.png`` for each.

    With several instructions, each input is edited in turns (an
    :class:`~instructedit.pipeline.EditSession`): the k-th instruction applies to the result of
    the one before, ``OUTPUT/<name>-turn-<k>.png`` holds the image after it (k = 1, 2, ...), and
    ``OUTPUT/<name>.png`` the final image. Every input is checked (exists, is a readable image of
    acceptable size) and every option validated before the model loads.

    Args:
        inputs: image files to edit.
        instruction: the edit, e.g. "make it snowy"; repeat the option to apply several in
            turns, in order (--instruction "make it snowy" --instruction "add a sledge").
        output: folder for the edited images (created if missing).
        model: a pipeline folder in the diffusers layout or a hub id.
        steps: denoising steps.
        text_scale: s_T, how strongly to follow the instruction; by default the model's stored
            guidance (``guidance_config.json``), else the paper's 7.5.
        image_scale: s_I, how strongly to stay with the input image; by default the model's
            stored guidance, else the paper's 1.5.
        seed: seed of the sampling noise (each input and each turn is edited with this seed).
        scheduler: replace the model's scheduler, e.g. "euler_ancestral", "ddim", "dpm_solver++".
        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
        dtype: model precision; "auto" is float16 on CUDA and float32 on the CPU.
        resize: "auto" (default: "native" for an input of more than 4× the model's native
            area, else "keep"), "native" (the long side scaled to the model's native size,
            e.g. 32 for the embedded default, 512 for SD 1.5), "keep" (the input's size, sides
            floored to multiples of 8) or "official" (the official CLI's 512 resize and crop).
            What "auto" resizes is logged; "keep" logs the cost estimate first.
        restore_size: write the outputs at the input's size (Lanczos) instead of the size
            edited at.
        dry_run: load the model, log and return each input's cost estimate (UNet
            evaluations, largest attention, peak memory), and edit nothing.
        max_pixels: largest accepted input (width × height).
        mask: a mask image for all inputs and turns (white: the edit may act, black: kept; of
            each input's aspect ratio), "auto" to find it from each instruction, or "none" to
            edit the whole image; by default the model's stored setting (its
            editing_config.json: "auto" for the embedded default, else the whole image).
        keep_unmasked_pixels: with a mask, paste the input's pixels back outside it; by
            default the model's stored setting.
        chain: how turns hand on their result: "pixels" (the decoded image) or "latents" (the
            final latents, without a VAE decode and encode between turns).

    Returns:
        The written files, in input order (for several instructions, each input's turn images
        before its final image); with ``dry_run``, each input's cost estimate instead.
    """
    instructions = [instruction] if isinstance(instruction, str) else list(instruction)
    _check_options(instructions, steps, text_scale, image_scale, scheduler, dtype, chain)
    if not inputs:
        raise ValueError("inputs must name at least one image file")
    images = [
        load_image(path, argument=f"inputs[{i}] ({path})", max_pixels=max_pixels)
        for i, path in enumerate(inputs)
    ]
    stems = [Path(path).stem for path in inputs]
    if len(set(stems)) != len(stems):
        raise ValueError(
            f"inputs must have distinct file names (outputs are named after them), got {stems}"
        )
    if resize not in get_args(SizePolicy):
        raise ValueError(f"resize must be one of {list(get_args(SizePolicy))}, got {resize!r}")
    mask_image = _check_mask(mask, keep_unmasked_pixels, images, inputs, "multiple_of_8")

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
    modes = [
        _size_mode(pipe, image, path, resize) for image, path in zip(images, inputs, strict=True)
    ]
    if dry_run or resize == "keep":
        estimates = []
        for image, path, mode in zip(images, inputs, modes, strict=True):
            cost = pipe.estimate(
                image.size,
                steps=steps,
                guidance_scale=text_scale,
                image_guidance_scale=image_scale,
                resize=mode,
            )
            logger.info("%s: %s", path, cost)
            estimates.append(f"{path}: {cost}")
        if dry_run:
            return estimates
    output.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for image, stem, mode in zip(
        tqdm(images, desc="images", disable=len(images) == 1), stems, modes, strict=True
    ):
        session = EditSession(pipe, image, seed=seed, chain=chain)
        for text in instructions:
            turn = session.edit(
                text,
                mask_image=mask_image,
                keep_unmasked_pixels=keep_unmasked_pixels,
                num_inference_steps=steps,
                guidance_scale=text_scale,
                image_guidance_scale=image_scale,
                resize=mode,
                max_pixels=max_pixels,
            )
            if len(instructions) > 1:
                written.append(
                    save_png_atomic(
                        _sized(turn.image, image, restore_size),
                        output / f"{stem}-turn-{turn.index + 1}.png",
                    )
                )
        final = _sized(session.current, image, restore_size)
        written.append(save_png_atomic(final, output / f"{stem}.png"))
        logger.info("wrote %s", written[-1])
    return written


SizePolicy = Literal["auto", "native", "keep", "official"]
"""How ``instructedit edit`` sizes an input for the model (see :func:`edit_files`)."""


def _size_mode(pipe: EditPipeline, image: Image.Image, path: Path, policy: str) -> ResizeMode:
    """The pipeline's ``resize`` for one input under the CLI's policy; logs what "auto" does."""
    if policy == "keep":
        return "multiple_of_8"
    if policy != "auto":
        return policy  # type: ignore[return-value]
    native = pipe.native_size
    if image.width * image.height <= 4 * native * native:
        return "multiple_of_8"
    multiple = max(8, pipe.vae_scale_factor)
    size = prepared_size(*image.size, resize="native", multiple=multiple, resolution=native)
    logger.info(
        "%s: resized %d×%d → %d×%d for this %d×%d editor; --resize keep edits at full size",
        path,
        image.width,
        image.height,
        *size,
        native,
        native,
    )
    return "native"


def _sized(edited: Image.Image, source: Image.Image, restore: bool) -> Image.Image:
    """``edited`` at the input's size when ``restore`` asks (Lanczos), else as edited."""
    if not restore or edited.size == source.size:
        return edited
    return edited.resize(source.size, resample=Image.Resampling.LANCZOS)


def _check_options(
    instructions: list[str],
    steps: int,
    text_scale: float | None,
    image_scale: float | None,
    scheduler: str | None,
    dtype: str,
    chain: str,
) -> None:
    """Raises ``ValueError`` naming the first option of :func:`edit_files` that is not allowed."""
    if not instructions:
        raise ValueError("instruction must name at least one edit, e.g. 'make it snowy'")
    for index, text in enumerate(instructions):
        if not isinstance(text, str) or not text.strip():
            name = "instruction" if len(instructions) == 1 else f"instruction[{index}]"
            raise ValueError(f"{name} must be a non-empty string, e.g. 'make it snowy'")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    for name, value in (("text_scale", text_scale), ("image_scale", image_scale)):
        if value is not None:
            check_scale(name, value)
    if scheduler is not None and scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {sorted(SCHEDULERS)}, got {scheduler!r}")
    if dtype not in ("auto", *_DTYPES):
        raise ValueError(f"dtype must be one of {['auto', *_DTYPES]}, got {dtype!r}")
    if chain not in get_args(Chain):
        raise ValueError(f"chain must be one of {list(get_args(Chain))}, got {chain!r}")


def _check_mask(
    mask: str | None,
    keep_unmasked_pixels: bool | None,
    images: Sequence[Image.Image],
    inputs: Sequence[Path],
    resize: ResizeMode,
) -> Image.Image | Literal["auto", "none"] | None:
    """The mask of :func:`edit_files`, read and checked against every input before the model
    loads: ``None`` (the model's stored setting), ``"auto"``, ``"none"`` or the mask image."""
    if mask is None:
        return None
    if mask == "none":
        if keep_unmasked_pixels:
            raise ValueError(
                "keep_unmasked_pixels needs a mask: --mask none edits the whole image "
                "(give --mask FILE or --mask auto)"
            )
        return "none"
    if mask == "auto":
        return "auto"
    loaded = load_mask(mask, argument=f"mask ({mask})")
    for index, (image, path) in enumerate(zip(images, inputs, strict=True)):
        # The pipeline fits the mask again at its own multiple; the checks (aspect ratio, not
        # all black) do not depend on it.
        prepare_mask(
            loaded,
            image.size,
            resize=resize,
            multiple=8,
            resolution=512,
            argument=f"mask ({mask}) for inputs[{index}] ({path})",
        )
    return loaded
