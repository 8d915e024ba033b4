"""The recipe's ``guidance`` stage: the editor's guidance scales (s_T, s_I) chosen over a grid
by the oracle on validation edits, and whether the choice lies on the grid's edge."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from instructedit.worlds.recipe._config import RecipeConfig, _check_scales
from instructedit.worlds.recipe._editor import _edit_held_out, _load_editor

__all__ = ["best_setting", "chosen_guidance", "grid_edges", "guidance_grid"]

logger = logging.getLogger(__name__)


def guidance_grid(
    model: str | Path,
    config: RecipeConfig,
    *,
    text_scales: Sequence[float] | None = None,
    image_scales: Sequence[float] | None = None,
    scheduler: str | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """The ``guidance`` stage's measurements: the editor in ``model`` edits
    ``config.guidance_scenes`` *validation* edits (rendered scenes drawn with seed
    ``config.seed + config.guidance_seed_offset``; the sampling noise from ``config.seed``, as
    every evaluation's) at every (s_T, s_I) of ``text_scales`` × ``image_scales`` (default: the
    config's grid) in ``config.eval_steps`` steps of the model's scheduler (or ``scheduler``, a
    name of :data:`~instructedit.sampling.SCHEDULERS`), and the oracle judges them.

    Returns one row per setting, in grid order: ``{"text_scale", "image_scale", "oracle"}`` with
    the :func:`~instructedit.worlds.evaluation.oracle_summary`. :func:`best_setting` picks the
    stage's choice among them; :func:`grid_edges` says whether it lies on the grid's edge.
    """
    from tqdm.auto import tqdm

    from instructedit.guidance import DualGuidance
    from instructedit.worlds.evaluation import held_out_edits, oracle_summary

    if text_scales is not None:
        _check_scales("text_scales", text_scales)
    if image_scales is not None:
        _check_scales("image_scales", image_scales)
    texts = tuple(config.guidance_text_scales if text_scales is None else text_scales)
    images = tuple(config.guidance_image_scales if image_scales is None else image_scales)
    edits = held_out_edits(config.guidance_scenes, seed=config.validation_seed)
    editor = _load_editor(config, Path(model), DualGuidance(), scheduler)
    rows: list[dict[str, Any]] = []
    for text_scale, image_scale in tqdm(
        [(t, i) for t in texts for i in images], disable=not progress, desc="guidance"
    ):
        outputs = _edit_held_out(config, editor, edits, text_scale, image_scale)
        oracle = oracle_summary(edits, outputs, size=config.size, tolerance=config.tolerance)
        rows.append({"text_scale": text_scale, "image_scale": image_scale, "oracle": oracle})
    return rows


def _stage_guidance(config: RecipeConfig, folder: Path, progress: bool) -> dict[str, Any]:
    """The editor's (s_T, s_I): every pair of the grid edits the validation scenes, the oracle
    judges them, and the highest success wins (ties: the lower unchanged-region error, then the
    earlier setting). Writes ``guidance_config.json``."""
    from instructedit.guidance import DualGuidance, save_guidance_config

    seed = config.validation_seed
    rows = guidance_grid(folder.parent / "editor" / "model", config, progress=progress)
    best = best_setting(rows)
    chosen = DualGuidance(
        text_scale=rows[best]["text_scale"], image_scale=rows[best]["image_scale"]
    )
    note = (
        "chosen by the ShapesWorld recipe's guidance stage: the highest oracle success on "
        f"{config.guidance_scenes} validation edits (seed {seed}) over "
        f"s_T {list(config.guidance_text_scales)} x s_I {list(config.guidance_image_scales)}"
    )
    edges = grid_edges(
        chosen.text_scale,
        chosen.image_scale,
        config.guidance_text_scales,
        config.guidance_image_scales,
    )
    if edges:
        logger.warning(
            "the guidance chosen lies on the grid's edge (%s): a wider grid may do better",
            "; ".join(edges),
        )
    save_guidance_config(chosen, folder, note=note)
    # The editor's folder carries it too, so that loading it (or shipping it) edits at it.
    save_guidance_config(chosen, folder.parent / "editor" / "model", note=note)
    logger.info("guidance chosen: s_T %g, s_I %g", chosen.text_scale, chosen.image_scale)
    return {
        "text_scale": chosen.text_scale,
        "image_scale": chosen.image_scale,
        "scenes": config.guidance_scenes,
        "seed": seed,
        "edges": edges,
        "grid": rows,
    }


def grid_edges(
    text_scale: float,
    image_scale: float,
    text_scales: Sequence[float],
    image_scales: Sequence[float],
) -> list[str]:
    """Which of the chosen scales sit at an end of the values tried, e.g. ``["s_I = 3 is the
    largest tried"]``: a best setting on the grid's edge says the best may lie beyond it. A scale
    tried at one value alone is not an edge."""
    edges = []
    for name, value, tried in (
        ("s_T", text_scale, text_scales),
        ("s_I", image_scale, image_scales),
    ):
        if len(set(tried)) < 2:
            continue
        if value == max(tried):
            edges.append(f"{name} = {value:g} is the largest tried")
        elif value == min(tried):
            edges.append(f"{name} = {value:g} is the smallest tried")
    return edges


def best_setting(rows: Sequence[dict[str, Any]]) -> int:
    """The index of the guidance stage's choice among its ``rows`` (each with an ``oracle``
    summary): the highest success of all edits; ties go to the lower unchanged-region error,
    then to the earlier row."""
    if not rows:
        raise ValueError("rows must hold at least one setting")
    return min(
        range(len(rows)),
        key=lambda k: (
            -rows[k]["oracle"]["all"]["success"],
            rows[k]["oracle"]["all"]["unchanged_error"],
            k,
        ),
    )


def chosen_guidance(run: str | Path) -> Any:
    """The :class:`~instructedit.guidance.DualGuidance` a run's ``guidance`` stage chose, or
    ``None`` before that stage."""
    from instructedit.guidance import load_guidance_config

    return load_guidance_config(Path(run) / "guidance")
