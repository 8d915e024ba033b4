"""Judging editors on held-out *rendered* ShapesWorld scenes: oracle, CLIP, baselines, figures.

The paper's claim is that an editor trained on generated pairs edits real images, so every
evaluation here starts from scenes drawn by the renderer, never from generated ones, and is
judged against the renderer's ground truth by :func:`~instructedit.worlds.shapes.judge`.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from instructedit.worlds.shapes import (
    EDIT_FAMILIES,
    EditFamily,
    SceneEdit,
    apply_edit,
    caption,
    judge,
    random_edit,
    random_scene,
    render,
)

__all__ = [
    "clip_similarities",
    "edit_grid",
    "held_out_edits",
    "identity_edits",
    "oracle_summary",
    "pipeline_edits",
    "round_trip_edits",
    "sdedit_edits",
]


def held_out_edits(
    count: int, *, seed: int = 0, families: Sequence[EditFamily] = EDIT_FAMILIES
) -> list[SceneEdit]:
    """``count`` edits of freshly drawn scenes, cycling through ``families`` (equal shares).

    The scene sampler is seeded with ``"held-out:{seed}"``, a stream no training stage draws from.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if not families or any(f not in EDIT_FAMILIES for f in families):
        raise ValueError(f"families must be a non-empty subset of {EDIT_FAMILIES}, got {families}")
    rng = random.Random(f"held-out:{seed}")
    edits: list[SceneEdit] = []
    for index in range(count):
        edit = None
        while edit is None:
            edit = random_edit(random_scene(rng), rng, families[index % len(families)])
        edits.append(edit)
    return edits


def pipeline_edits(
    pipe: Any,
    edits: Sequence[SceneEdit],
    *,
    size: int = 32,
    num_inference_steps: int = 20,
    guidance_scale: float | None = None,
    image_guidance_scale: float | None = None,
    seed: int = 0,
    batch_size: int = 25,
    progress: bool = True,
) -> list[Image.Image]:
    """Edits each rendered source scene by its instruction with an :class:`EditPipeline`.

    Example ``i`` is edited with noise from ``seed + i`` whatever the batch size; ``None`` scales
    are the pipeline's defaults.
    """
    outputs: list[Image.Image] = []
    for start in tqdm(
        range(0, len(edits), batch_size), disable=not progress, desc="editing", unit="batch"
    ):
        chunk = edits[start : start + batch_size]
        result = pipe(
            [render(edit.source, size) for edit in chunk],
            [edit.instruction for edit in chunk],
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            image_guidance_scale=image_guidance_scale,
            generator=[torch.Generator().manual_seed(seed + start + i) for i in range(len(chunk))],
            progress=False,
        )
        outputs.extend(result.images)
    return outputs


def identity_edits(edits: Sequence[SceneEdit], *, size: int = 32) -> list[Image.Image]:
    """The identity baseline: the input returned unchanged."""
    return [render(edit.source, size) for edit in edits]


def round_trip_edits(
    vae: Any,
    edits: Sequence[SceneEdit],
    *,
    size: int = 32,
    batch_size: int = 50,
) -> list[Image.Image]:
    """The autoencoder's floor: each edit's *ground truth*, encoded and decoded (posterior mode).

    No editor that works in this autoencoder's latent space can do better than its own decoder
    does on the true result, so the oracle's verdicts on these images bound every latent
    editor's: an edit the round trip does not realise, or an unchanged-region error it already
    has, is the autoencoder's, not the editor's.

    Args:
        vae: a diffusers ``AutoencoderKL`` (or a folder to load one from).
        edits: the edits whose ground truths are round-tripped.
        size: scene side.
        batch_size: scenes per encoder call.
    """
    if isinstance(vae, (str, Path)):
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(vae)
    from instructedit.components import decode_latents
    from instructedit.images import pil_to_tensor, tensor_to_output

    outputs: list[Image.Image] = []
    for start in range(0, len(edits), batch_size):
        truths = [apply_edit(e, size) for e in edits[start : start + batch_size]]
        pixels = pil_to_tensor(truths).to(vae.device, vae.dtype)
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor
        decoded = tensor_to_output(decode_latents(vae, latents), "pil")
        assert isinstance(decoded, list)
        outputs.extend(decoded)
    return outputs


def sdedit_edits(
    text_to_image: Any,
    edits: Sequence[SceneEdit],
    *,
    strength: float,
    size: int = 32,
    num_inference_steps: int = 20,
    guidance_scale: float = 7.5,
    seed: int = 0,
    batch_size: int = 25,
    progress: bool = True,
) -> list[Image.Image]:
    """The SDEdit baseline (Meng et al. 2022): noise the input to ``strength`` of the schedule and
    denoise it with the *edited caption* on the text-to-image model.

    Args:
        text_to_image: a diffusers ``StableDiffusionImg2ImgPipeline`` (or a folder to load one
            from).
        edits: the edits; the target scene's caption is the prompt.
        strength: fraction of the schedule noised (0: the input, 1: a fresh sample).
        size: scene side.
        num_inference_steps: sampler steps of the full schedule.
        guidance_scale: classifier-free guidance scale.
        seed: example ``i`` uses noise from ``seed + i``.
        batch_size: examples per call.
        progress: show a progress bar.
    """
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    if isinstance(text_to_image, (str, Path)):
        from diffusers import StableDiffusionImg2ImgPipeline

        text_to_image = StableDiffusionImg2ImgPipeline.from_pretrained(
            text_to_image, safety_checker=None, requires_safety_checker=False
        )
        text_to_image.set_progress_bar_config(disable=True)
    outputs: list[Image.Image] = []
    for start in tqdm(
        range(0, len(edits), batch_size), disable=not progress, desc="sdedit", unit="batch"
    ):
        chunk = edits[start : start + batch_size]
        result = text_to_image(
            prompt=[caption(edit.target) for edit in chunk],
            image=[render(edit.source, size) for edit in chunk],
            strength=strength,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=[torch.Generator().manual_seed(seed + start + i) for i in range(len(chunk))],
        )
        outputs.extend(result.images)
    return outputs


def oracle_summary(
    edits: Sequence[SceneEdit],
    outputs: Sequence[Image.Image],
    *,
    size: int = 32,
    tolerance: float = 0.08,
) -> dict[str, dict[str, float]]:
    """The oracle's verdicts, per edit family and over all (``"all"``).

    Each entry holds ``realised`` (share of edits that happened), ``unchanged_error`` (mean
    absolute error outside the edited region, pixels in [0, 1]), ``intact`` (share whose regions
    left alone still show their own colours: :attr:`~instructedit.worlds.shapes.Judgement.rest`),
    ``success`` (share realised, with an unchanged-region error at most ``tolerance`` *and* the
    rest intact: the oracle score, which neither doing nothing, nor redrawing the scene, nor
    erasing a shape the edit keeps can earn) and ``count``.
    """
    if len(edits) != len(outputs):
        raise ValueError(f"got {len(edits)} edits but {len(outputs)} outputs")
    groups: dict[str, list[tuple[bool, float, bool]]] = defaultdict(list)
    for edit, output in zip(edits, outputs, strict=True):
        verdict = judge(edit, output, size=size)
        for key in (edit.family, "all"):
            groups[key].append(
                (verdict.realised, verdict.unchanged_error, verdict.rest == "intact")
            )
    summary: dict[str, dict[str, float]] = {}
    for key in [*(f for f in EDIT_FAMILIES if f in groups), "all"]:
        rows = groups[key]
        summary[key] = {
            "realised": sum(r for r, _, _ in rows) / len(rows),
            "unchanged_error": sum(e for _, e, _ in rows) / len(rows),
            "intact": sum(i for _, _, i in rows) / len(rows),
            "success": sum(r and e <= tolerance and i for r, e, i in rows) / len(rows),
            "count": len(rows),
        }
    return summary


def clip_similarities(
    scorer: Any, edits: Sequence[SceneEdit], outputs: Sequence[Image.Image], *, size: int = 32
) -> dict[str, float]:
    """Mean CLIP directional similarity (image change vs caption change) and image similarity
    (output vs input), the paper's two evaluation axes."""
    from instructedit.clip import ClipDirectionalFilter

    scores = ClipDirectionalFilter(scorer).score(
        [render(edit.source, size) for edit in edits],
        list(outputs),
        [caption(edit.source) for edit in edits],
        [caption(edit.target) for edit in edits],
    )
    return {
        "direction_similarity": float(scores.direction_similarity.mean()),
        "image_similarity": float(scores.image_similarity.mean()),
    }


def edit_grid(
    edits: Sequence[SceneEdit],
    columns: dict[str, Sequence[Image.Image]],
    *,
    size: int = 32,
    scale: int = 3,
) -> Image.Image:
    """A figure: one row per edit (its instruction above), columns input, ground truth, then
    each of ``columns`` (name → outputs), images enlarged by ``scale`` without smoothing."""
    names = ["input", "ground truth", *columns]
    cell = size * scale
    pad, text = 4, 12
    font = ImageFont.load_default()
    width = len(names) * (cell + pad) + pad
    height = text + len(edits) * (cell + text + pad) + pad
    figure = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(figure)
    for column, name in enumerate(names):
        draw.text((pad + column * (cell + pad), 0), name, fill="black", font=font)
    for row, edit in enumerate(edits):
        top = text + row * (cell + text + pad)
        draw.text((pad, top), edit.instruction, fill="black", font=font)
        images = [
            render(edit.source, size),
            apply_edit(edit, size),
            *(outputs[row] for outputs in columns.values()),
        ]
        for column, image in enumerate(images):
            tile = image.convert("RGB").resize((cell, cell), Image.Resampling.NEAREST)
            figure.paste(tile, (pad + column * (cell + pad), top + text))
    return figure
