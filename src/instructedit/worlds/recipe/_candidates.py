"""Where the recipe's pairs come from: the candidate sets that Prompt-to-Prompt renders with the
run's text-to-image model, and the renderer's own ground-truth pairs."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from instructedit.worlds.recipe._config import RecipeConfig

if TYPE_CHECKING:
    from instructedit.datagen import GenerationConfig

__all__ = [
    "candidate_sets",
    "ground_truth_records",
    "pair_captions",
    "pair_generation_config",
]


def candidate_sets(config: RecipeConfig) -> list[tuple[str, tuple[float, float]]]:
    """The pairs stage's candidate sets: (folder name under ``pairs/``, text guidance range), the
    first ``"candidates"`` at ``pair_guidance_range``, then one per ``pair_extra_guidance``."""
    return [("candidates", config.pair_guidance_range)] + [
        (f"candidates-g{scale:g}", (scale, scale)) for scale in config.pair_extra_guidance
    ]


def _render_candidates(
    config: RecipeConfig,
    p2p: Any,
    scorer: Any,
    target: Path,
    guidance: tuple[float, float],
    shard: tuple[int, int],
    progress: bool,
) -> Any:
    """Renders one share of a candidate set (all of it for ``shard=(0, 1)``; captions already
    finished are only counted); returns the :class:`~instructedit.datagen.GenerationSummary`."""
    from instructedit.clip import ClipDirectionalFilter
    from instructedit.datagen import generate_dataset
    from instructedit.worlds.shapes import ShapesCaptionEditor

    return generate_dataset(
        pair_captions(config),
        target,
        caption_editor=ShapesCaptionEditor(seed=config.seed),
        p2p=p2p,
        # Score every candidate, keep all: thresholds are applied later, on the stored scores.
        clip_filter=ClipDirectionalFilter(scorer, -1.0, -1.0, -1.0),
        config=pair_generation_config(config, guidance, shard=shard),
        progress=progress,
    )


def pair_captions(config: RecipeConfig) -> list[str]:
    """The pairs stage's ``config.captions`` captions (random scenes, seeded by ``config.seed``)."""
    from instructedit.worlds.shapes import caption, random_scene

    rng = random.Random(f"captions:{config.seed}")
    return [caption(random_scene(rng)) for _ in range(config.captions)]


def pair_generation_config(
    config: RecipeConfig, guidance: tuple[float, float], shard: tuple[int, int] = (0, 1)
) -> GenerationConfig:
    """The :class:`~instructedit.datagen.GenerationConfig` of one of the pairs stage's candidate
    sets (``guidance``: its text guidance range); ``shard`` splits the captions between
    processes (see :func:`~instructedit.datagen.generate_dataset`), for a stage run by several."""
    from instructedit.datagen import GenerationConfig

    return GenerationConfig(
        samples_per_pair=config.samples_per_pair,
        keep_per_pair=config.samples_per_pair,
        batch_size=min(8, config.samples_per_pair),
        num_inference_steps=config.generation_steps,
        control=config.pair_control,
        injection_range=config.pair_control_range,
        local_blend=config.pair_local_blend,
        guidance_range=guidance,
        seed=config.seed,
        height=config.size,
        width=config.size,
        shard=shard,
    )


def ground_truth_records(
    count: int, config: RecipeConfig, stream: str = "ground-truth"
) -> list[Any]:
    """``count`` pairs drawn by the renderer itself (edits of random scenes, exact targets)."""
    from instructedit.worlds.shapes import edit_record, random_edit, random_scene

    rng = random.Random(f"{stream}:{config.seed}")
    records: list[Any] = []
    while len(records) < count:
        edit = random_edit(random_scene(rng), rng)
        if edit is not None:
            records.append(edit_record(edit, config.size))
    return records
