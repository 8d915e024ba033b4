"""Scores editors and the baselines on the same held-out scenes with today's oracle.

    python examples/shapes/score_editors.py outputs/shapes
    python examples/shapes/score_editors.py outputs/shapes --editor longer=outputs/shapes-7000/editor/model
    python examples/shapes/score_editors.py outputs/shapes --sdedit outputs/shapes outputs/shapes-2x
    python examples/shapes/score_editors.py outputs/shapes --output scores.json   # resumable

Edits the run's held-out rendered scenes (its ``eval_scenes`` and ``seed``, or ``--scenes`` and
``--seed``) with the run's editor and each ``--editor NAME=FOLDER`` at their stored guidance
(``guidance_config.json``; the paper's 7.5 and 1.5 for a folder without one), as
:func:`~instructedit.worlds.recipe.evaluate_editor` does; with SDEdit from the text-to-image
model of each ``--sdedit`` run at ``--strengths`` (the run's text guidance); the identity; and
the ground truth through the run's autoencoder. Prints, per method, the first oracle's success
(realised and an unchanged-region error within the run's tolerance), the share with the rest
intact (:attr:`~instructedit.worlds.shapes.Judgement.rest`), today's success per family and over
all, and the unchanged-region error. With ``--output``, each method's scores are written as they
finish and a rerun skips those already there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from diffusers import AutoencoderKL
from PIL import Image

from instructedit import EditPipeline
from instructedit.data import write_json_atomic
from instructedit.worlds.evaluation import (
    held_out_edits,
    identity_edits,
    oracle_summary,
    pipeline_edits,
    round_trip_edits,
    sdedit_edits,
)
from instructedit.worlds.shapes import EDIT_FAMILIES, SceneEdit, judge


def _scores(edits: list[SceneEdit], outputs: list[Image.Image], size: int, tolerance: float):
    summary: dict[str, Any] = oracle_summary(edits, outputs, size=size, tolerance=tolerance)
    verdicts = [judge(e, o, size=size) for e, o in zip(edits, outputs, strict=True)]
    summary["all"]["first_oracle_success"] = sum(
        v.realised and v.unchanged_error <= tolerance for v in verdicts
    ) / len(verdicts)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="folder of `instructedit shapes reproduce`")
    parser.add_argument("--editor", action="append", default=[], help="NAME=FOLDER, repeatable")
    parser.add_argument("--sdedit", type=Path, nargs="*", default=[], help="run folders")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.4, 0.6, 0.8])
    parser.add_argument("--scenes", type=int, help="held-out scenes (the run's eval_scenes)")
    parser.add_argument("--seed", type=int, help="held-out scenes' and noise seed (the run's)")
    parser.add_argument("--output", type=Path, help="JSON of the scores, resumable")
    args = parser.parse_args()
    editors = {"run's editor": args.run / "editor" / "model"}
    for item in args.editor:
        name, separator, folder = item.partition("=")
        if not separator or not name or not folder:
            parser.error(f"--editor takes NAME=FOLDER, got {item!r}")
        editors[name] = Path(folder)
    config = json.loads((args.run / "config.json").read_text())
    size, tolerance, steps = config["size"], config["tolerance"], config["eval_steps"]
    seed = config["seed"] if args.seed is None else args.seed
    edits = held_out_edits(args.scenes or config["eval_scenes"], seed=seed)
    results: dict[str, Any] = (
        json.loads(args.output.read_text()) if args.output and args.output.is_file() else {}
    )

    def record(name: str, outputs: list[Image.Image]) -> None:
        results[name] = _scores(edits, outputs, size, tolerance)
        if args.output:
            write_json_atomic(args.output, results)

    for name, folder in editors.items():
        if name not in results:
            pipe = EditPipeline.from_pretrained(folder)
            record(
                name,
                pipeline_edits(
                    pipe, edits, size=size, num_inference_steps=steps, seed=seed, progress=False
                ),
            )
    if "identity" not in results:
        record("identity", identity_edits(edits, size=size))
    if "ground truth, autoencoded" not in results:
        vae = AutoencoderKL.from_pretrained(editors["run's editor"] / "vae")
        record("ground truth, autoencoded", round_trip_edits(vae, edits, size=size))
    for run in args.sdedit:
        names = [f"SDEdit {s:g}, {run.name}" for s in args.strengths]
        if all(name in results for name in names):
            continue
        from diffusers import StableDiffusionImg2ImgPipeline

        text_to_image = StableDiffusionImg2ImgPipeline.from_pretrained(
            run / "text_to_image" / "model", safety_checker=None, requires_safety_checker=False
        )
        text_to_image.set_progress_bar_config(disable=True)
        guidance = json.loads((run / "config.json").read_text())["text_scale"]
        for strength, name in zip(args.strengths, names, strict=True):
            if name not in results:
                record(
                    name,
                    sdedit_edits(
                        text_to_image,
                        edits,
                        strength=strength,
                        size=size,
                        num_inference_steps=steps,
                        guidance_scale=guidance,
                        seed=seed,
                        progress=False,
                    ),
                )

    print(
        "method | first oracle | rest intact | success "
        + " / ".join(EDIT_FAMILIES)
        + " | success | unchanged error"
    )
    for name, summary in results.items():
        total = summary["all"]
        families = " / ".join(f"{summary[f]['success']:.1%}" for f in EDIT_FAMILIES)
        print(
            f"{name} | {total['first_oracle_success']:.1%} | {total['intact']:.1%} | "
            f"{families} | {total['success']:.1%} | {total['unchanged_error']:.3f}"
        )


if __name__ == "__main__":
    main()
