"""Judging editors on held-out *rendered* ShapesWorld scenes: oracle, CLIP, baselines, figures.

The paper's claim is that an editor trained on generated pairs edits real images, so every
evaluation here starts from scenes drawn by the renderer, never from generated ones, and is
judged against the renderer's ground truth by :func:`~instructedit.worlds.shapes.judge`.
"""

from __future__ import annotations

import logging
import os
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from instructedit.worlds.shapes import (
    EDIT_FAMILIES,
    SUCCESS_TOLERANCE,
    EditFamily,
    Judgement,
    SceneEdit,
    apply_edit,
    caption,
    edit_region,
    judge,
    random_edit,
    random_scene,
    render,
)

__all__ = [
    "MaskMode",
    "clip_similarities",
    "edit_grid",
    "evaluate_shapes_editor",
    "family_rows",
    "format_evaluation",
    "held_out_edits",
    "identity_edits",
    "mask_iou",
    "oracle_summary",
    "pipeline_edits",
    "round_trip_edits",
    "score_edits",
    "sdedit_edits",
]

logger = logging.getLogger(__name__)


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


MaskMode = Literal["none", "oracle", "auto"]
"""Which mask an editor gets on ShapesWorld: none, the oracle's own region of each edit
(:func:`~instructedit.worlds.shapes.edit_region`: the upper bound of any mask), or the one
``mask_image="auto"`` finds from the instruction."""


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
    masks: MaskMode = "none",
    progress: bool = True,
    found: list[np.ndarray] | None = None,
    cache_interval: int = 1,
) -> list[Image.Image]:
    """Edits each rendered source scene by its instruction with an :class:`EditPipeline`.

    Example ``i`` is edited with noise from ``seed + i`` whatever the batch size; ``None`` scales
    are the pipeline's defaults. With ``masks`` other than ``"none"`` the edit is masked (blended
    latents, and the input's pixels pasted back outside the mask with a hard edge); ``found``, if
    given, receives each mask used as ``[size, size]`` in [0, 1]. ``cache_interval`` is the
    pipeline's feature caching (1: none).
    """
    if masks not in ("none", "oracle", "auto"):
        raise ValueError(f"masks must be 'none', 'oracle' or 'auto', got {masks!r}")
    outputs: list[Image.Image] = []
    for start in tqdm(
        range(0, len(edits), batch_size), disable=not progress, desc="editing", unit="batch"
    ):
        chunk = edits[start : start + batch_size]
        mask_kwargs: dict[str, Any] = {"mask_image": "none"}  # whatever the model stores
        if masks == "oracle":
            regions = [edit_region(edit, size) for edit in chunk]
            mask_kwargs = {"mask_image": regions, "keep_unmasked_pixels": True, "mask_feather": 0}
        elif masks == "auto":
            mask_kwargs = {"mask_image": "auto", "keep_unmasked_pixels": True, "mask_feather": 0}
        result = pipe(
            [render(edit.source, size) for edit in chunk],
            [edit.instruction for edit in chunk],
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            image_guidance_scale=image_guidance_scale,
            generator=[torch.Generator().manual_seed(seed + start + i) for i in range(len(chunk))],
            progress=False,
            cache_interval=cache_interval,
            **mask_kwargs,
        )
        outputs.extend(result.images)
        if found is not None and result.masks is not None:
            found.extend(mask[0].numpy() for mask in result.masks)
    return outputs


def mask_iou(found: Sequence[np.ndarray], edits: Sequence[SceneEdit], *, size: int = 32) -> float:
    """Mean intersection over union of found masks (kept where > 0.5) with the oracle's regions
    (:func:`~instructedit.worlds.shapes.edit_region`)."""
    scores = []
    for mask, edit in zip(found, edits, strict=True):
        ours, truth = mask > 0.5, edit_region(edit, size) > 0.5
        union = (ours | truth).sum()
        scores.append(float((ours & truth).sum() / union) if union else 1.0)
    return float(np.mean(scores))


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
    tolerance: float = SUCCESS_TOLERANCE,
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
    groups: dict[str, list[Judgement]] = defaultdict(list)
    for edit, output in zip(edits, outputs, strict=True):
        verdict = judge(edit, output, size=size)
        for key in (edit.family, "all"):
            groups[key].append(verdict)
    summary: dict[str, dict[str, float]] = {}
    for key in [*(f for f in EDIT_FAMILIES if f in groups), "all"]:
        rows = groups[key]
        summary[key] = {
            "realised": sum(v.realised for v in rows) / len(rows),
            "unchanged_error": sum(v.unchanged_error for v in rows) / len(rows),
            "intact": sum(v.rest == "intact" for v in rows) / len(rows),
            "success": sum(v.success(tolerance) for v in rows) / len(rows),
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


def score_edits(
    scorer: Any,
    edits: Sequence[SceneEdit],
    outputs: Sequence[Image.Image],
    *,
    size: int = 32,
    tolerance: float = SUCCESS_TOLERANCE,
) -> dict[str, Any]:
    """One method's scores: ``{"oracle": oracle_summary(...), "clip": clip_similarities(...)}``
    (see :func:`oracle_summary` and :func:`clip_similarities`)."""
    return {
        "oracle": oracle_summary(edits, outputs, size=size, tolerance=tolerance),
        "clip": clip_similarities(scorer, edits, outputs, size=size),
    }


def family_rows(edits: Sequence[SceneEdit], per_family: int = 2) -> list[int]:
    """Indices of the first ``per_family`` edits of each family, family by family: the rows of a
    figure that shows every family (:func:`edit_grid`)."""
    return [
        index
        for family in EDIT_FAMILIES
        for index in [i for i, edit in enumerate(edits) if edit.family == family][:per_family]
    ]


def _editor_and_clip(
    model: str | os.PathLike[str], clip: str | os.PathLike[str] | None
) -> tuple[Path, Path]:
    """(editor folder, CLIP folder) of ``model``: ``"shapes"``, a recipe run or an editor."""
    from instructedit.default import (
        DEFAULT_MODEL_NAME,
        default_clip_dir,
        default_model_dir,
        names_default,
    )

    if names_default(model):
        editor, run_clip = default_model_dir(), default_clip_dir()
    else:
        folder = Path(model)
        if (folder / "editor" / "model" / "model_index.json").is_file():  # a recipe run
            editor, run_clip = folder / "editor" / "model", folder / "clip" / "model"
        elif (folder / "model_index.json").is_file():
            editor, run_clip = folder, None
        else:
            shadowing = (
                f" (the folder {folder} here hides the embedded default: run elsewhere)"
                if str(model) == DEFAULT_MODEL_NAME
                else ""
            )
            raise FileNotFoundError(
                f"model: {folder} is neither 'shapes' (the embedded default), a folder of "
                f"`instructedit shapes reproduce` nor an editor folder (no model_index.json)"
                f"{shadowing}"
            )
    scorer_dir = Path(clip) if clip is not None else run_clip
    if scorer_dir is None:
        raise ValueError(
            f"clip: {model} is an editor folder, which holds no CLIP; give the open_clip folder "
            "that scores its edits (a run's clip/model)"
        )
    if not (scorer_dir / "open_clip_config.json").is_file():
        raise FileNotFoundError(f"clip: {scorer_dir} holds no open_clip_config.json")
    return editor, scorer_dir


def evaluate_shapes_editor(
    model: str | os.PathLike[str] = "shapes",
    output: str | os.PathLike[str] | None = None,
    *,
    clip: str | os.PathLike[str] | None = None,
    scenes: int = 200,
    seed: int = 0,
    steps: int = 20,
    sweep_scenes: int = 48,
    masks: Sequence[MaskMode] = (),
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Scores a ShapesWorld editor as the ShapesWorld guide reports them, from an install alone.

    Edits ``scenes`` held-out *rendered* scenes (:func:`held_out_edits`; ``seed`` 0 draws the
    test edits the ShapesWorld guide reports, 7 the validation edits the guidance was chosen on) at
    the editor's stored guidance, each with the noise of ``seed`` + its index, and judges them
    with the oracle (per family and over all: realised, rest intact, success, unchanged-region
    error) and CLIP (directional and image similarity). The identity baseline and the floor
    (the ground truth through the editor's autoencoder) are scored beside it. With
    ``sweep_scenes``, the paper's sweep (s_T = 7.5, s_I from 1 to 2.2) on the first of them.

    Args:
        model: ``"shapes"`` (the embedded default), a folder of ``instructedit shapes
            reproduce`` or an editor folder (then give ``clip``).
        output: a folder for ``evaluation.json``, ``grid.png`` (two edits per family) and,
            with the sweep, ``sweep.csv`` and ``sweep.png`` (``None``: nothing is written).
        clip: the open_clip folder that scores the edits (default: the model's).
        scenes: held-out edits (their families in equal shares).
        seed: the held-out scenes' and the noise's seed.
        steps: sampler steps.
        sweep_scenes: edits of the sweep (0: no sweep).
        masks: also score the editor with masks: ``"oracle"`` (each edit's own region, the upper
            bound of any mask) and/or ``"auto"`` (found from the instruction; its mean IoU with
            the oracle's region is reported as ``"mask_iou"``). Masked edits paste the input back
            outside the mask.
        device: where to run (default: CUDA if available).
        progress: show progress bars.

    Returns:
        ``{"model", "guidance", "scenes", "seed", "steps", "methods", "sweep"}``; ``methods`` maps
        ``"editor"``, ``"identity"`` and ``"ground truth, autoencoded"`` (and ``"editor, oracle
        masks"``, ``"editor, auto masks"``) to their ``"oracle"`` (:func:`oracle_summary`) and
        ``"clip"`` (:func:`clip_similarities`) scores.

    Raises:
        ValueError: a count out of range, or an editor folder without ``clip``.
        FileNotFoundError: ``model`` or ``clip`` is not what it must be.
    """
    from instructedit.clip import ClipScorer
    from instructedit.components import vae_scale_factor
    from instructedit.evaluation import PAPER_IMAGE_SCALES, guidance_sweep, plot_sweep, write_csv
    from instructedit.pipeline import EditPipeline
    from instructedit.worlds.shapes import edit_record

    for name, value, minimum in (
        ("scenes", scenes, 1),
        ("steps", steps, 1),
        ("sweep_scenes", sweep_scenes, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    if sweep_scenes > scenes:
        raise ValueError(f"sweep_scenes ({sweep_scenes}) must not exceed scenes ({scenes})")
    unknown = [mode for mode in masks if mode not in ("oracle", "auto")]
    if isinstance(masks, str) or unknown:
        raise ValueError(f"masks must hold 'oracle' and/or 'auto', got {masks!r}")
    editor_dir, clip_dir = _editor_and_clip(model, clip)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = EditPipeline.from_pretrained(editor_dir)
    if device != "cpu":
        pipe = pipe.to(device)
    scorer = ClipScorer.from_open_clip(f"local-dir:{clip_dir}", device=device)
    edits = held_out_edits(scenes, seed=seed)
    size = int(pipe.unet.config.sample_size) * vae_scale_factor(pipe.vae)  # the scenes' side
    outputs = {
        "editor": pipeline_edits(
            pipe, edits, size=size, num_inference_steps=steps, seed=seed, progress=progress
        ),
        "identity": identity_edits(edits, size=size),
        "ground truth, autoencoded": round_trip_edits(pipe.vae, edits, size=size),
    }
    found: dict[str, list[np.ndarray]] = {}
    for mode in dict.fromkeys(masks):
        found[mode] = []
        outputs[f"editor, {mode} masks"] = pipeline_edits(
            pipe,
            edits,
            size=size,
            num_inference_steps=steps,
            seed=seed,
            masks=mode,
            found=found[mode],
            progress=progress,
        )
    methods = {
        name: score_edits(scorer, edits, images, size=size) for name, images in outputs.items()
    }
    points = []
    if sweep_scenes:
        points = guidance_sweep(
            pipe,
            scorer,
            [edit_record(edit, size) for edit in edits[:sweep_scenes]],
            text_scale=7.5,
            image_scales=PAPER_IMAGE_SCALES,
            num_inference_steps=steps,
            seed=seed,
            progress=progress,
        )
    result: dict[str, Any] = {
        "model": str(model),
        "guidance": {
            "text_scale": pipe.guidance.text_scale,
            "image_scale": pipe.guidance.image_scale,
        },
        "scenes": scenes,
        "seed": seed,
        "steps": steps,
        "methods": methods,
        "sweep": [asdict(point) for point in points],
    }
    if "auto" in found:
        result["mask_iou"] = mask_iou(found["auto"], edits, size=size)
    if output is not None:
        from instructedit.data import write_json_atomic

        folder = Path(output)
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / "evaluation.json", result)
        rows = family_rows(edits)
        edit_grid(
            [edits[i] for i in rows], {"editor": [outputs["editor"][i] for i in rows]}, size=size
        ).save(folder / "grid.png")
        if points:
            write_csv(points, folder / "sweep.csv")
            try:
                plot_sweep(points, folder / "sweep.png", label="ShapesWorld editor")
            except ImportError as error:  # matplotlib is an extra: instructedit[plot]
                logger.warning("sweep.png not drawn (%s); sweep.csv holds the points", error)
    logger.info("%s", format_evaluation(result))
    return result


def format_evaluation(result: dict[str, Any]) -> str:
    """A plain-text table of :func:`evaluate_shapes_editor`'s result: per method, the oracle's
    realised and success shares per family, the success, the share with the rest intact, the
    unchanged-region error and the CLIP similarities; then the sweep."""
    guidance = result["guidance"]
    abbreviations = {"recolour": "rc", "background": "bg", "add": "add", "remove": "rm"}
    present = [f for f in EDIT_FAMILIES if f in result["methods"]["editor"]["oracle"]]
    families = "/".join(abbreviations.get(f, f) for f in present)
    lines = [
        f"{result['model']} at s_T = {guidance['text_scale']:g}, s_I = {guidance['image_scale']:g}"
        f" on {result['scenes']} held-out rendered edits (seed {result['seed']}, "
        f"{result['steps']} steps)",
        f"{'method':<28}  {'realised: ' + families:<22}  {'success: ' + families:<22}  "
        "success   intact   error  CLIP dir  CLIP img",
    ]
    for name, scores in result["methods"].items():
        oracle, clip = scores["oracle"], scores["clip"]
        per_family = [oracle[f] for f in present]
        realised = "/".join(f"{100 * row['realised']:.0f}" for row in per_family) + " %"
        success = "/".join(f"{100 * row['success']:.0f}" for row in per_family) + " %"
        lines.append(
            f"{name:<28}  {realised:<22}  {success:<22}  {100 * oracle['all']['success']:5.1f} %"
            f"  {100 * oracle['all']['intact']:5.1f} %  {oracle['all']['unchanged_error']:.3f}"
            f"  {clip['direction_similarity']:8.3f}  {clip['image_similarity']:8.3f}"
        )
    if "mask_iou" in result:
        lines.append(f"auto masks: mean IoU with the oracle's regions {result['mask_iou']:.3f}")
    if result["sweep"]:
        lines.append("sweep at s_T = 7.5: s_I, CLIP direction, CLIP image")
        lines.extend(
            f"  {point['image_scale']:.1f}  {point['direction_similarity']:.3f}  "
            f"{point['image_similarity']:.3f}"
            for point in result["sweep"]
        )
    return "\n".join(lines)
