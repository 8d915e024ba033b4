"""The recipe's ``evaluate`` and ``ablations`` stages: the editor against the baselines on
held-out rendered edits, with the guidance sweep and a figure; editors trained on other training
sets against the full editor at the same step."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from instructedit.data import write_json_atomic
from instructedit.worlds.recipe._base_models import clip_scorer
from instructedit.worlds.recipe._candidates import ground_truth_records
from instructedit.worlds.recipe._config import RecipeConfig, _device
from instructedit.worlds.recipe._editor import (
    _edit_held_out,
    _load_editor,
    _train_editor,
    evaluate_editor,
)
from instructedit.worlds.recipe._guidance import chosen_guidance
from instructedit.worlds.recipe._selection import load_selection, selection_folders

__all__ = ["PAPER_GUIDANCE_ROW"]

logger = logging.getLogger(__name__)


# The package's __init__ documents it where it exports it.
PAPER_GUIDANCE_ROW = "editor at the paper's guidance (7.5, 1.5)"


def _stage_evaluate(config: RecipeConfig, folder: Path, progress: bool) -> dict[str, Any]:
    """The editor (at the chosen guidance, and at the paper's) and both baselines on held-out
    rendered scenes, the sweep, the figure."""
    from instructedit.evaluation import guidance_sweep, plot_sweep, write_csv
    from instructedit.guidance import DualGuidance
    from instructedit.worlds.evaluation import (
        edit_grid,
        family_rows,
        held_out_edits,
        identity_edits,
        round_trip_edits,
        score_edits,
        sdedit_edits,
    )
    from instructedit.worlds.shapes import edit_record

    root = folder.parent
    scorer = clip_scorer(config)
    edits = held_out_edits(config.eval_scenes, seed=config.seed)
    chosen = chosen_guidance(root) or DualGuidance()
    editor = _load_editor(config, root / "editor" / "model", chosen)
    outputs = {"editor": _edit_held_out(config, editor, edits)}
    paper = DualGuidance()
    if (chosen.text_scale, chosen.image_scale) != (paper.text_scale, paper.image_scale):
        outputs[PAPER_GUIDANCE_ROW] = _edit_held_out(
            config, editor, edits, paper.text_scale, paper.image_scale
        )
    outputs["identity"] = identity_edits(edits, size=config.size)
    # Not a method: the floor every latent editor shares (its decoder on the true result).
    outputs["ground truth, autoencoded"] = round_trip_edits(editor.vae, edits, size=config.size)
    from diffusers import StableDiffusionImg2ImgPipeline

    text_to_image = StableDiffusionImg2ImgPipeline.from_pretrained(
        root / "text_to_image" / "model", safety_checker=None, requires_safety_checker=False
    ).to(_device(config))
    text_to_image.set_progress_bar_config(disable=True)
    for strength in config.sdedit_strengths:
        outputs[f"sdedit-{strength:g}"] = sdedit_edits(
            text_to_image,
            edits,
            strength=strength,
            size=config.size,
            num_inference_steps=config.eval_steps,
            guidance_scale=config.text_scale,
            seed=config.seed,
            progress=progress,
        )
    methods = {
        name: score_edits(scorer, edits, images, size=config.size, tolerance=config.tolerance)
        for name, images in outputs.items()
    }

    examples = [edit_record(edit, config.size) for edit in edits[: config.sweep_scenes]]
    points = guidance_sweep(
        editor,
        scorer,
        examples,
        text_scale=config.text_scale,
        image_scales=config.sweep_image_scales,
        num_inference_steps=config.eval_steps,
        seed=config.seed,
        progress=progress,
    )
    write_csv(points, folder / "sweep.csv")
    plot_sweep(points, folder / "sweep.png", label="ShapesWorld editor")

    best_sdedit = max(
        (name for name in methods if name.startswith("sdedit")),
        key=lambda name: methods[name]["oracle"]["all"]["success"],
    )
    rows = family_rows(edits)
    edit_grid(
        [edits[i] for i in rows],
        {
            "editor": [outputs["editor"][i] for i in rows],
            best_sdedit: [outputs[best_sdedit][i] for i in rows],
        },
        size=config.size,
    ).save(folder / "grid.png")
    return {
        "methods": methods,
        "sweep": [asdict(point) for point in points],
        "best_sdedit": best_sdedit,
        "guidance": {"text_scale": chosen.text_scale, "image_scale": chosen.image_scale},
    }


def _stage_ablations(config: RecipeConfig, folder: Path, progress: bool) -> dict[str, Any]:
    """Editors trained ``ablation_steps`` on other training sets, against the full recipe's
    editor at the same step, all at the paper's guidance."""
    from instructedit.guidance import DualGuidance

    root = folder.parent
    full = (
        root
        / "editor"
        / (
            f"model-{config.ablation_steps}"
            if config.ablation_steps < config.editor_steps
            else "model"
        )
    )
    if not (full / "model_index.json").is_file():
        snapshots = sorted(p.name for p in (root / "editor").glob("model-*"))
        raise FileNotFoundError(
            f"the ablations compare with the full editor at step {config.ablation_steps}, but "
            f"{full} does not exist (the editor's snapshots: {snapshots or 'none'}); pass the "
            "ablation_steps the run's editor stage was made with"
        )
    filtered_pairs = len(selection_folders(root, "filtered"))  # counted, not decoded
    # name → (training set, config): the paper's two ablations, two this world allows, and the
    # paper's zero-initialised image channels against this recipe's copied ones (see ABLATIONS).
    recipes: dict[str, tuple[Callable[[], list[Any]], RecipeConfig]] = {
        "no_clip_filter": (lambda: load_selection(root, "unfiltered"), config),
        "fewer_pairs": (lambda: load_selection(root, "fewer"), config),
        "ground_truth": (lambda: ground_truth_records(filtered_pairs, config), config),
        "ground_truth_large": (
            lambda: ground_truth_records(
                config.ground_truth_large_pairs, config, stream="ground-truth-large"
            ),
            config,
        ),
        "zero_init": (
            lambda: load_selection(root, "filtered"),
            replace(config, editor_init="zeros"),
        ),
    }
    results: dict[str, Any] = {}
    marker = folder / "full" / "DONE.json"
    if not marker.is_file():
        start = time.perf_counter()
        record = {"examples": filtered_pairs, **evaluate_editor(full, config, DualGuidance())}
        record["seconds"] = round(time.perf_counter() - start, 1)
        write_json_atomic(marker, record)
    results["full"] = json.loads(marker.read_text(encoding="utf-8"))
    for name in config.ablations:
        records, variant = recipes[name]
        marker = folder / name / "DONE.json"
        if not marker.is_file():
            start = time.perf_counter()
            record = _train_editor(
                variant, root, records(), folder / name, config.ablation_steps, progress=progress
            )
            record.update(evaluate_editor(folder / name / "model", config, DualGuidance()))
            record["seconds"] = round(time.perf_counter() - start, 1)
            write_json_atomic(marker, record)
            logger.info("ablation %s done: %s", name, record)
        results[name] = json.loads(marker.read_text(encoding="utf-8"))
        if results[name].get("steps", config.ablation_steps) != config.ablation_steps:
            raise ValueError(
                f"{folder / name} holds an editor trained {results[name]['steps']} steps but "
                f"ablation_steps is {config.ablation_steps}: pass ablation_steps="
                f"{results[name]['steps']}, or delete that folder to train it again"
            )
    return {"steps": config.ablation_steps, "runs": results}
