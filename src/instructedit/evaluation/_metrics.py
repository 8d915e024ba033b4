"""Evaluation metrics: the paper's CLIP sweep and MagicBrush-style scores."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from instructedit._inputs import check_positive_int, check_texts
from instructedit.clip import (
    ClipScorer,
    directional_similarity,
    image_image_similarity,
    image_text_similarity,
)
from instructedit.data import EditRecord
from instructedit.guidance import check_scale

__all__ = [
    "PAPER_IMAGE_SCALES",
    "EditMetrics",
    "SweepPoint",
    "combine_sweeps",
    "edit_metrics",
    "guidance_sweep",
    "plot_sweep",
    "write_csv",
]

PAPER_IMAGE_SCALES = (1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2)
"""The image guidance scales of the paper's sweep (text guidance fixed at 7.5)."""


@dataclass(frozen=True)
class SweepPoint:
    """Mean CLIP scores of one guidance setting over the evaluation set.

    Attributes:
        text_scale: s_T.
        image_scale: s_I.
        direction_similarity: mean cos(I₁ − I₀, T₁ − T₀): how much the edit follows the caption change.
        image_similarity: mean cos(I₀, I₁): consistency with the input image.
        count: examples evaluated.
    """

    text_scale: float
    image_scale: float
    direction_similarity: float
    image_similarity: float
    count: int


def guidance_sweep(
    pipe: Any,
    scorer: ClipScorer,
    examples: Sequence[EditRecord],
    *,
    text_scale: float = 7.5,
    image_scales: Sequence[float] = PAPER_IMAGE_SCALES,
    num_inference_steps: int = 100,
    seed: int = 0,
    batch_size: int = 8,
    progress: bool = True,
) -> list[SweepPoint]:
    """The paper's evaluation (Fig. 8): edit every example at each s_I with s_T fixed, and average
    CLIP directional similarity (against the captions' change) and image similarity (against
    the input).

    Args:
        pipe: an :class:`~instructedit.pipeline.EditPipeline`.
        scorer: CLIP features.
        examples: records with ``input_caption`` and ``output_caption`` (a test split).
        text_scale: s_T (7.5 in the paper).
        image_scales: s_I values (1.0 … 2.2 in the paper).
        num_inference_steps: sampler steps (100 in the paper).
        seed: each example is edited with this seed at every setting.
        batch_size: examples edited per call.
        progress: show a progress bar.
    """
    if isinstance(examples, EditRecord) or not isinstance(examples, Sequence):
        raise TypeError(f"examples must be a list of EditRecord, got {type(examples).__name__}")
    if not examples:
        raise ValueError("examples is empty; the sweep averages over at least one example")
    check_scale("text_scale", text_scale)
    if isinstance(image_scales, (int, float)) or not isinstance(image_scales, Sequence):
        raise TypeError(f"image_scales must be a list of numbers, got {image_scales!r}")
    if not image_scales:
        raise ValueError("image_scales is empty; pass at least one s_I, e.g. (1.5,)")
    for index, scale in enumerate(image_scales):
        check_scale(f"image_scales[{index}]", scale)
    check_positive_int(num_inference_steps, "num_inference_steps")
    check_positive_int(batch_size, "batch_size")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    for index, record in enumerate(examples):
        if not isinstance(record, EditRecord):
            raise TypeError(f"examples[{index}] must be an EditRecord, got {type(record).__name__}")
        if not record.input_caption or not record.output_caption:
            raise ValueError(
                f"examples[{index}] needs input_caption and output_caption for the CLIP sweep"
            )
    before = scorer.encode_images([r.input_image for r in examples])
    captions_0 = scorer.encode_texts([r.input_caption or "" for r in examples])
    captions_1 = scorer.encode_texts([r.output_caption or "" for r in examples])
    points = []
    for image_scale in tqdm(image_scales, disable=not progress, desc="s_I sweep"):
        edited: list[Image.Image] = []
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            # One generator per example: the result does not depend on the batch size.
            generators = [torch.Generator(pipe.device).manual_seed(seed) for _ in chunk]
            output = pipe(
                [r.input_image for r in chunk],
                [r.edit_prompt for r in chunk],
                num_inference_steps=num_inference_steps,
                guidance_scale=text_scale,
                image_guidance_scale=image_scale,
                generator=generators,
                progress=False,
            )
            edited.extend(output.images)
        after = scorer.encode_images(edited)
        points.append(
            SweepPoint(
                text_scale=text_scale,
                image_scale=float(image_scale),
                direction_similarity=float(
                    directional_similarity(before, after, captions_0, captions_1).mean()
                ),
                image_similarity=float(image_image_similarity(before, after).mean()),
                count=len(examples),
            )
        )
    return points


def combine_sweeps(sweeps: Sequence[Sequence[SweepPoint]]) -> list[SweepPoint]:
    """Combines sweeps of disjoint shares of one evaluation set (one per process of a job) into
    the sweep of the whole set: per setting, the means weighted by each share's ``count``.

    Every example is edited with the noise of the sweep's seed whatever share it is in, so the
    combined sweep equals the sweep of the whole set up to float rounding. Shares that held no
    example contribute an empty sweep.
    """
    shares = [list(sweep) for sweep in sweeps if sweep]
    if not shares:
        raise ValueError("sweeps holds no points; combine the sweeps of at least one example")
    settings = [(p.text_scale, p.image_scale) for p in shares[0]]
    for index, share in enumerate(shares):
        if [(p.text_scale, p.image_scale) for p in share] != settings:
            raise ValueError(
                f"sweeps[{index}] has other guidance settings than the first share; combine "
                "sweeps of one setting list"
            )
    combined = []
    for position, (text_scale, image_scale) in enumerate(settings):
        points = [share[position] for share in shares]
        count = sum(p.count for p in points)
        combined.append(
            SweepPoint(
                text_scale=text_scale,
                image_scale=image_scale,
                direction_similarity=sum(p.direction_similarity * p.count for p in points) / count,
                image_similarity=sum(p.image_similarity * p.count for p in points) / count,
                count=count,
            )
        )
    return combined


def write_csv(rows: Sequence[Any], path: str | Path) -> Path:
    """Writes dataclass rows (e.g. :class:`SweepPoint`) as CSV with a header."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not rows:
        raise ValueError("rows is empty; there is nothing to write")
    for index, row in enumerate(rows):
        if not is_dataclass(row) or isinstance(row, type):
            raise TypeError(f"rows[{index}] must be a dataclass instance, got {type(row).__name__}")
    dicts = [asdict(row) for row in rows]
    with target.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(dicts[0]))
        writer.writeheader()
        writer.writerows(dicts)
    return target


def plot_sweep(
    points: Sequence[SweepPoint], path: str | Path, *, label: str = "instructedit"
) -> Path:
    """Plots the sweep as the paper does: x = directional similarity, y = image similarity, one
    labelled point per s_I. Needs matplotlib (``pip install 'instructedit[plot]'``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "plot_sweep needs matplotlib: pip install 'instructedit[plot]'"
        ) from error
    figure, axes = plt.subplots(figsize=(4.5, 4))
    xs = [p.direction_similarity for p in points]
    ys = [p.image_similarity for p in points]
    axes.plot(xs, ys, marker="o", label=label)
    for point in points:
        axes.annotate(
            f"{point.image_scale:g}",
            (point.direction_similarity, point.image_similarity),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=7,
        )
    axes.set_xlabel("CLIP text-image direction similarity")
    axes.set_ylabel("CLIP image similarity")
    axes.set_title(f"s_T = {points[0].text_scale:g}, varying s_I" if points else "")
    axes.legend()
    figure.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=150)
    plt.close(figure)
    return target


@dataclass(frozen=True)
class EditMetrics:
    """MagicBrush-style metrics of edited images against ground-truth edits (means).

    Attributes:
        l1: mean absolute pixel error in [0, 1].
        clip_i: cos of CLIP image features, output vs ground truth.
        clip_t: cos of the output's CLIP image features and the target caption's.
        dino: cos of DINO features, output vs ground truth (``nan`` without a DINO model).
        count: examples.
    """

    l1: float
    clip_i: float
    clip_t: float
    dino: float
    count: int


def _pixels(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    return (
        np.asarray(image.convert("RGB").resize(size, Image.Resampling.BICUBIC), dtype=np.float32)
        / 255.0
    )


def edit_metrics(
    outputs: Sequence[Image.Image],
    targets: Sequence[Image.Image],
    target_captions: Sequence[str],
    scorer: ClipScorer,
    *,
    dino: Callable[[Sequence[Image.Image]], torch.Tensor] | None = None,
) -> EditMetrics:
    """L1, CLIP-I, CLIP-T and (with ``dino``, a function from images to features) DINO.

    Outputs are resized to each target's size for L1.
    """
    for name, items in (
        ("outputs", outputs),
        ("targets", targets),
        ("target_captions", target_captions),
    ):
        if isinstance(items, (str, bytes, Image.Image)) or not isinstance(items, Sequence):
            raise TypeError(f"{name} must be a list, got {type(items).__name__}")
    if not (len(outputs) == len(targets) == len(target_captions)):
        raise ValueError(
            f"got {len(outputs)} outputs, {len(targets)} targets, {len(target_captions)} captions"
        )
    if not outputs:
        raise ValueError("outputs is empty; the metrics average over at least one edited image")
    for name, images in (("outputs", outputs), ("targets", targets)):
        for index, image in enumerate(images):
            if not isinstance(image, Image.Image):
                raise TypeError(f"{name}[{index}] must be a PIL image, got {type(image).__name__}")
    check_texts(target_captions, "target_captions")
    l1 = float(
        np.mean(
            [
                np.abs(_pixels(o, t.size) - _pixels(t, t.size)).mean()
                for o, t in zip(outputs, targets, strict=True)
            ]
        )
    )
    out_features = scorer.encode_images(list(outputs))
    clip_i = float(image_image_similarity(out_features, scorer.encode_images(list(targets))).mean())
    clip_t = float(
        image_text_similarity(out_features, scorer.encode_texts(list(target_captions))).mean()
    )
    dino_score = math.nan
    if dino is not None:
        dino_score = float(F.cosine_similarity(dino(outputs), dino(targets), dim=-1).mean())
    return EditMetrics(l1=l1, clip_i=clip_i, clip_t=clip_t, dino=dino_score, count=len(outputs))
