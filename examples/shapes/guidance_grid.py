"""Tries an editor at a grid of guidance scales on validation edits, as the recipe's stage does.

    python examples/shapes/guidance_grid.py shapes                       # the embedded default
    python examples/shapes/guidance_grid.py outputs/shapes               # a run's editor
    python examples/shapes/guidance_grid.py shapes --image-scales 3 4 5 6 --scenes 200
    python examples/shapes/guidance_grid.py shapes --scheduler dpm_solver++ --steps 50
    python examples/shapes/guidance_grid.py shapes --output grid.json

:func:`~instructedit.worlds.recipe.guidance_grid` edits the validation scenes (seed
``seed + guidance_seed_offset``, never the test edits) at every (s_T, s_I); the oracle judges
them. Prints, per setting, the success, the share with the rest intact, the unchanged-region
error and the edits realised per family; then the setting the ``guidance`` stage would choose
(:func:`~instructedit.worlds.recipe.best_setting`) and whether it lies on the grid's edge
(:func:`~instructedit.worlds.recipe.grid_edges`). Nothing is written into the model's folder.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from instructedit.data import write_json_atomic
from instructedit.sampling import SCHEDULERS
from instructedit.worlds.recipe import RecipeConfig, best_setting, grid_edges, guidance_grid
from instructedit.worlds.shapes import EDIT_FAMILIES

OPTIONS = {
    "guidance_scenes": "--scenes",
    "eval_steps": "--steps",
    "text_scales": "--text-scales",
    "image_scales": "--image-scales",
}
"""The names errors give the arguments, and the options they come from."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "model", help="'shapes' (the embedded default), an editor folder or a recipe run's folder"
    )
    defaults = RecipeConfig()
    parser.add_argument(
        "--text-scales", type=float, nargs="+", default=list(defaults.guidance_text_scales)
    )
    parser.add_argument(
        "--image-scales", type=float, nargs="+", default=list(defaults.guidance_image_scales)
    )
    parser.add_argument("--scenes", type=int, default=defaults.guidance_scenes)
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="the recipe's seed: the noise's, and seed + 7 the validation scenes'",
    )
    parser.add_argument("--steps", type=int, default=defaults.eval_steps, help="sampler steps")
    parser.add_argument(
        "--scheduler", choices=sorted(SCHEDULERS), help="sampler (default: the model's own)"
    )
    parser.add_argument("--output", type=Path, help="JSON of the rows")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    if args.model == "shapes":
        from instructedit.default import default_model_dir

        model = Path(default_model_dir())
    else:
        model = Path(args.model)
        if (model / "editor" / "model" / "model_index.json").is_file():
            model = model / "editor" / "model"
    if not (model / "model_index.json").is_file():
        parser.error(f"{model} holds no editor (no model_index.json)")
    try:
        config = RecipeConfig(seed=args.seed, guidance_scenes=args.scenes, eval_steps=args.steps)
        rows = guidance_grid(
            model,
            config,
            text_scales=args.text_scales,
            image_scales=args.image_scales,
            scheduler=args.scheduler,
            progress=True,
        )
    except ValueError as error:  # named as the options are
        message = str(error)
        for field, option in OPTIONS.items():
            message = message.replace(field, option)
        parser.error(message)
    seed = config.validation_seed
    sampler = args.scheduler or "the model's scheduler"
    print(
        f"{args.scenes} validation edits (seed {seed}), editor {model}, {sampler}, {args.steps} steps"
    )
    print(
        "s_T | s_I | success | rest intact | unchanged error | realised: "
        + " / ".join(EDIT_FAMILIES)
    )
    for row in rows:
        oracle = row["oracle"]
        realised = " / ".join(
            f"{100 * oracle[f]['realised']:.1f}%" if f in oracle else "-" for f in EDIT_FAMILIES
        )
        print(
            f"{row['text_scale']:g} | {row['image_scale']:g} | "
            f"{100 * oracle['all']['success']:.1f}% | {100 * oracle['all']['intact']:.1f}% | "
            f"{oracle['all']['unchanged_error']:.3f} | {realised}"
        )
    best = rows[best_setting(rows)]
    edges = grid_edges(best["text_scale"], best["image_scale"], args.text_scales, args.image_scales)
    print(
        f"chosen: s_T {best['text_scale']:g}, s_I {best['image_scale']:g}"
        + (f" (on the grid's edge: {'; '.join(edges)})" if edges else "")
    )
    if args.output is not None:
        record = {
            "model": str(model),
            "scenes": args.scenes,
            "seed": seed,
            "steps": args.steps,
            "scheduler": args.scheduler,
            "chosen": {"text_scale": best["text_scale"], "image_scale": best["image_scale"]},
            "edges": edges,
            "rows": rows,
        }
        write_json_atomic(args.output, record)
        print(f"written: {args.output}")


if __name__ == "__main__":
    main()
