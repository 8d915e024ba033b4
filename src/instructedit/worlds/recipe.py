"""The ShapesWorld reproduction of the paper: every stage with the library's public parts.

Stages (each skipped when its folder holds a ``DONE.json``; the long ones resume inside):

1. ``text_to_image`` — train the autoencoder, then text encoder + UNet, on rendered scenes;
2. ``clip`` — train a small CLIP on renders and captions;
3. ``pairs`` — :class:`~instructedit.worlds.shapes.ShapesCaptionEditor` edits captions,
   :class:`~instructedit.p2p.PromptToPrompt` samples candidate pairs,
   :class:`~instructedit.clip.ClipDirectionalFilter` keeps the best (``generate_dataset``);
4. ``editor`` — :class:`~instructedit.training.Trainer` from the text-to-image UNet via
   :func:`~instructedit.training.to_edit_unet`;
5. ``evaluate`` — held-out *rendered* scenes, judged by the oracle per edit family.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image

from instructedit.data import write_json_atomic

__all__ = [
    "STAGES",
    "RecipeConfig",
    "evaluate_editor",
    "reproduce",
    "shapes_command",
]

logger = logging.getLogger(__name__)

STAGES = ("text_to_image", "clip", "pairs", "editor", "evaluate")


@dataclass(frozen=True)
class RecipeConfig:
    """Sizes of the ShapesWorld recipe (defaults: the full run on a 2-core CPU)."""

    output_dir: str = "outputs/shapes"
    """Where every stage writes."""
    seed: int = 0
    """Seed of every stage."""
    size: int = 32
    """Scene side in pixels."""
    autoencoder_steps: int = 600
    """Autoencoder training steps (batch 64; ~0.7 s each on two CPU cores)."""
    text_to_image_steps: int = 4000
    """Text encoder + UNet training steps (batch 64; ~0.5 s each on two CPU cores)."""
    clip_steps: int = 1500
    """CLIP training steps (batch 128; ~0.26 s each on two CPU cores)."""
    captions: int = 400
    """Captions edited and rendered as pairs."""
    samples_per_pair: int = 8
    """Candidate pairs per caption edit."""
    keep_per_pair: int = 2
    """Kept pairs per caption edit."""
    generation_steps: int = 20
    """Sampler steps when rendering pairs."""
    min_image_similarity: float = 0.75
    """CLIP filter threshold on cos(I₀, I₁) (the paper's)."""
    min_direction_similarity: float = 0.2
    """CLIP filter threshold on the directional similarity (the paper's)."""
    min_text_similarity: float = 0.2
    """CLIP filter threshold on the image–caption similarities (the paper's)."""
    editor_steps: int = 6000
    """Editor training steps."""
    editor_batch_size: int = 32
    """Editor batch size."""
    eval_scenes: int = 200
    """Held-out rendered scenes per evaluation."""
    eval_steps: int = 20
    """Sampler steps of the evaluation edits."""

    @classmethod
    def smoke(cls, output_dir: str = "outputs/shapes-smoke") -> RecipeConfig:
        """A run of every stage in about two minutes (CI): the numbers are meaningless."""
        return cls(
            output_dir=output_dir,
            autoencoder_steps=10,
            text_to_image_steps=10,
            clip_steps=10,
            captions=4,
            samples_per_pair=2,
            keep_per_pair=1,
            min_image_similarity=0.0,
            min_direction_similarity=-1.0,
            min_text_similarity=-1.0,
            generation_steps=3,
            editor_steps=5,
            editor_batch_size=4,
            eval_scenes=8,
            eval_steps=3,
        )


def _stage_text_to_image(config: RecipeConfig, folder: Path, progress: bool) -> dict[str, Any]:
    from diffusers import DDPMScheduler, EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    from instructedit.testing import SD_SCHEDULER_CONFIG, clip_tokenizer
    from instructedit.worlds._models import (
        shapes_autoencoder,
        shapes_text_encoder,
        shapes_unet,
        train_autoencoder,
        train_text_to_image,
    )

    vae = shapes_autoencoder(config.seed)
    ae_losses = train_autoencoder(
        vae, steps=config.autoencoder_steps, size=config.size, seed=config.seed, progress=progress
    )
    unet, text_encoder, tokenizer = (
        shapes_unet(config.seed),
        shapes_text_encoder(config.seed),
        clip_tokenizer(),
    )
    scheduler = DDPMScheduler(**SD_SCHEDULER_CONFIG, clip_sample=False)
    losses = train_text_to_image(
        unet,
        text_encoder,
        tokenizer,
        vae,
        scheduler,
        steps=config.text_to_image_steps,
        size=config.size,
        seed=config.seed,
        progress=progress,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=EulerAncestralDiscreteScheduler(**SD_SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder / "model", safe_serialization=True)
    return {"autoencoder_loss": _tail(ae_losses), "text_to_image_loss": _tail(losses)}


def _stage_clip(config: RecipeConfig, folder: Path, progress: bool) -> dict[str, Any]:
    import open_clip

    from instructedit.testing import save_open_clip
    from instructedit.worlds._models import SHAPES_CLIP_CONFIG, shapes_clip, train_clip

    model = shapes_clip(config.seed)
    losses = train_clip(
        model,
        open_clip.get_tokenizer("ViT-B-32"),
        steps=config.clip_steps,
        size=config.size,
        seed=config.seed,
        progress=progress,
    )
    save_open_clip(model, SHAPES_CLIP_CONFIG, folder / "model")
    return {"clip_loss": _tail(losses)}


def _scorer(root: Path) -> Any:
    from instructedit.clip import ClipScorer

    return ClipScorer.from_open_clip(f"local-dir:{root / 'clip' / 'model'}")


def _stage_pairs(config: RecipeConfig, folder: Path, progress: bool) -> dict[str, Any]:
    from instructedit.clip import ClipDirectionalFilter
    from instructedit.datagen import GenerationConfig, generate_dataset
    from instructedit.p2p import PromptToPrompt
    from instructedit.worlds.shapes import ShapesCaptionEditor, caption, random_scene

    root = folder.parent
    rng = random.Random(f"captions:{config.seed}")
    captions = [caption(random_scene(rng)) for _ in range(config.captions)]
    p2p = PromptToPrompt.from_pretrained(root / "text_to_image" / "model")
    summary = generate_dataset(
        captions,
        folder / "data",
        caption_editor=ShapesCaptionEditor(seed=config.seed),
        p2p=p2p,
        clip_filter=ClipDirectionalFilter(
            _scorer(root),
            config.min_image_similarity,
            config.min_direction_similarity,
            config.min_text_similarity,
        ),
        config=GenerationConfig(
            samples_per_pair=config.samples_per_pair,
            keep_per_pair=config.keep_per_pair,
            batch_size=min(8, config.samples_per_pair),
            num_inference_steps=config.generation_steps,
            seed=config.seed,
            height=config.size,
            width=config.size,
        ),
        progress=progress,
    )
    return {
        "kept": summary.kept,
        "samples": summary.samples,
        "dropped": dict(summary.dropped),
        "caption_rejections": dict(summary.caption_rejections),
    }


def _stage_editor(config: RecipeConfig, folder: Path, progress: bool) -> dict[str, Any]:
    from diffusers import DDPMScheduler

    from instructedit.components import load_components
    from instructedit.training import FolderSource, TrainConfig, Trainer, to_edit_unet

    root = folder.parent
    parts = load_components(root / "text_to_image" / "model")
    source = FolderSource(root / "pairs" / "data", "all")
    trainer = Trainer(
        TrainConfig(
            output_dir=str(folder / "run"),
            resolution=config.size,
            batch_size=config.editor_batch_size,
            max_steps=config.editor_steps,
            learning_rate=3e-4,
            ema_decay=0.999,
            seed=config.seed,
            checkpoint_every=max(1, min(500, config.editor_steps)),
            log_with="none",
            random_flip=True,
        ),
        unet=to_edit_unet(parts["unet"]),
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        noise_scheduler=DDPMScheduler.from_config(parts["scheduler"].config, clip_sample=False),
        train_dataset=source,
    )
    losses = trainer.train()
    trainer.export(folder / "model")
    return {"editor_loss": _tail(losses), "examples": len(source)}


def evaluate_editor(model: Path, config: RecipeConfig, *, progress: bool = True) -> dict[str, Any]:
    """Edits held-out rendered scenes and judges them with the oracle, per edit family."""
    from instructedit.pipeline import EditPipeline
    from instructedit.worlds.shapes import EDIT_FAMILIES, judge, random_edit, random_scene, render

    pipe = EditPipeline.from_pretrained(model)
    rng = random.Random(f"held-out:{config.seed}")
    results: dict[str, list[Any]] = defaultdict(list)
    for index in range(config.eval_scenes):
        family = EDIT_FAMILIES[index % len(EDIT_FAMILIES)]
        edit = None
        while edit is None:
            edit = random_edit(random_scene(rng), rng, family)
        output = pipe(
            render(edit.source, config.size),
            edit.instruction,
            num_inference_steps=config.eval_steps,
            generator=torch.Generator().manual_seed(index),
            progress=False,
        ).images[0]
        assert isinstance(output, Image.Image)  # output_type="pil"
        results[family].append(judge(edit, output, size=config.size))
    summary: dict[str, Any] = {}
    for name, judgements in results.items():
        summary[name] = {
            "realised": sum(j.realised for j in judgements) / len(judgements),
            "unchanged_error": sum(j.unchanged_error for j in judgements) / len(judgements),
            "count": len(judgements),
        }
    return summary


def _stage_evaluate(config: RecipeConfig, folder: Path, progress: bool) -> dict[str, Any]:
    return {
        "oracle": evaluate_editor(folder.parent / "editor" / "model", config, progress=progress)
    }


_RUNNERS: dict[str, Callable[[RecipeConfig, Path, bool], dict[str, Any]]] = {
    "text_to_image": _stage_text_to_image,
    "clip": _stage_clip,
    "pairs": _stage_pairs,
    "editor": _stage_editor,
    "evaluate": _stage_evaluate,
}


def _tail(losses: list[float]) -> float:
    window = losses[-max(1, len(losses) // 10) :]
    return sum(window) / len(window) if window else float("nan")


def reproduce(config: RecipeConfig, *, progress: bool = True) -> dict[str, Any]:
    """Runs (or continues) the recipe; returns each stage's record (timings and numbers)."""
    root = Path(config.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(asdict(config), indent=2), encoding="utf-8")
    records: dict[str, Any] = {}
    for stage in STAGES:
        folder = root / stage
        marker = folder / "DONE.json"
        if marker.is_file():
            records[stage] = json.loads(marker.read_text(encoding="utf-8"))
            logger.info("stage %s already done", stage)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        record = _RUNNERS[stage](config, folder, progress)
        record["seconds"] = round(time.perf_counter() - start, 1)
        write_json_atomic(marker, record)
        records[stage] = record
        logger.info("stage %s done in %.0f s: %s", stage, record["seconds"], record)
    return records


def shapes_command(
    action: Literal["reproduce"],
    *,
    output: Path = Path("outputs/shapes"),
    smoke: bool = False,
    seed: int = 0,
) -> str:
    """Runs the ShapesWorld reproduction of the paper (rerun to continue a stopped run).

    Args:
        action: what to do; "reproduce" runs (or continues) every stage.
        output: folder of the run.
        smoke: run every stage at toy size (about two minutes; the numbers are meaningless).
        seed: seed of every stage.
    """
    base = RecipeConfig.smoke(str(output)) if smoke else RecipeConfig(output_dir=str(output))
    config = RecipeConfig(**{**asdict(base), "seed": seed})
    records = reproduce(config)
    summary = Path(config.output_dir) / "summary.json"
    write_json_atomic(summary, records)
    return str(summary)
