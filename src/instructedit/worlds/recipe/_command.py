"""``instructedit shapes``: the command that runs the recipe or scores an editor."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal

from instructedit.data import write_json_atomic
from instructedit.worlds.recipe._config import RecipeConfig
from instructedit.worlds.recipe._runner import reproduce

__all__ = ["shapes_command"]


def shapes_command(
    action: Literal["reproduce", "evaluate"],
    *,
    output: Path | None = None,
    smoke: bool = False,
    gpu: bool = False,
    seed: int = 0,
    until: Literal[
        "text_to_image", "clip", "pairs", "editor", "guidance", "evaluate", "ablations", "report"
    ]
    | None = None,
    model: str = "shapes",
    clip: Path | None = None,
    scenes: int = 200,
    masks: list[Literal["oracle", "auto"]] | None = None,
) -> str:
    """Runs the ShapesWorld reproduction of the paper (rerun to continue a stopped run), or
    scores an editor on held-out rendered scenes as the ShapesWorld guide reports them.

    Args:
        action: "reproduce" runs (or continues) every stage; "evaluate" scores ``model``
            (:func:`~instructedit.worlds.evaluation.evaluate_shapes_editor`) and logs the table.
        output: folder of the run (default outputs/shapes), or of the evaluation's files
            (default outputs/shapes-evaluation).
        smoke: run every stage at toy size (about two minutes; the numbers are meaningless), or
            evaluate on 8 edits with a 4-edit sweep.
        gpu: the editor sizes for one GPU (:meth:`RecipeConfig.gpu`; for a CUDA device).
        seed: seed of every stage; for "evaluate" the held-out scenes' (0: the test edits the
            ShapesWorld guide reports, 7: the validation edits).
        until: last stage to run (default: all of them).
        model: for "evaluate": "shapes" (the embedded default), a run's folder or an editor
            folder (then give ``clip``).
        clip: for "evaluate": the open_clip folder that scores the edits (default: the model's).
        scenes: for "evaluate": held-out edits (the sweep takes the first 48).
        masks: for "evaluate": also score the editor with masks, "oracle" (each edit's own
            region, the upper bound of any mask) and/or "auto" (found from the instruction).
    """
    if action == "evaluate":
        given = [name for name, value in (("gpu", gpu), ("until", until)) if value]
        if given:
            raise ValueError(f"{' and '.join(given)}: reproduce's options, not evaluate's")
        if smoke and scenes != 200:
            raise ValueError(f"scenes: smoke evaluates 8 edits, so scenes={scenes} cannot apply")
        from instructedit.worlds.evaluation import evaluate_shapes_editor

        folder = output if output is not None else Path("outputs/shapes-evaluation")
        evaluate_shapes_editor(
            model,
            folder,
            clip=clip,
            scenes=8 if smoke else scenes,
            seed=seed,
            sweep_scenes=4 if smoke else min(48, scenes),
            masks=tuple(masks or ()),
        )
        return str(folder / "evaluation.json")
    given = [
        name
        for name, value in (
            ("model", model != "shapes"),
            ("clip", clip),
            ("scenes", scenes != 200),
            ("masks", masks),
        )
        if value
    ]
    if given:
        raise ValueError(f"{' and '.join(given)}: evaluate's options, not reproduce's")
    if smoke and gpu:
        raise ValueError("smoke and gpu are two presets: pass at most one")
    output = output if output is not None else Path("outputs/shapes")
    if smoke:
        base = RecipeConfig.smoke(str(output))
    elif gpu:
        base = RecipeConfig.gpu(str(output))
    else:
        base = RecipeConfig(output_dir=str(output))
    config = replace(base, seed=seed)
    records = reproduce(config, until=until)
    summary = Path(config.output_dir) / "summary.json"
    write_json_atomic(summary, records)
    return str(summary)
