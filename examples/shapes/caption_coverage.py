"""How many different caption edits a ShapesWorld run trained on, and what that does to its editor.

    python examples/shapes/caption_coverage.py outputs/shapes
    python examples/shapes/caption_coverage.py outputs/shapes --editor default

Prints two measurements for a run of ``instructedit shapes reproduce`` (the pairs stage done):

1. ``coverage``: per edit family, the caption edits (input caption, instruction, edited caption)
   of its candidates and of its training set (``pairs/selections.json``'s ``filtered``): how
   many, how many distinct. ShapesWorld's captions repeat (168 one-shape captions exist), so
   the count of distinct caption edits, not of captions, is what the editor can learn from;
2. ``seen``: the editor (the run's, ``--editor DIR``, or ``--editor default`` for the embedded
   one) on fresh renders of its training caption edits (each input caption laid out anew by
   :func:`~instructedit.worlds.shapes.scene_from_caption`, the instruction's ground truth from
   :func:`~instructedit.worlds.shapes.scene_edit`), against the run's held-out edits
   (:func:`~instructedit.worlds.evaluation.held_out_edits`), both judged by the oracle. Both are
   renders of the same world; the difference is whether the editor trained on pairs of that
   caption edit. The held-out line also says how many of its edits are training caption edits.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path

from instructedit import EditPipeline, load_default
from instructedit.captions import CaptionEdit
from instructedit.worlds.evaluation import held_out_edits, oracle_summary, pipeline_edits
from instructedit.worlds.reading import pair_family
from instructedit.worlds.recipe import selection_folders
from instructedit.worlds.shapes import EDIT_FAMILIES, caption, scene_edit, scene_from_caption


def _caption_edit(folder: Path) -> CaptionEdit:
    prompt = json.loads((folder / "prompt.json").read_text(encoding="utf-8"))
    return CaptionEdit(prompt["input"], prompt["edit"], prompt["output"])


def _by_family(edits: list[CaptionEdit]) -> dict[str, list[CaptionEdit]]:
    grouped: dict[str, list[CaptionEdit]] = defaultdict(list)
    for edit in edits:
        grouped[pair_family(edit.input, edit.output)].append(edit)
    return grouped


def _print_summary(label: str, summary: dict[str, dict[str, float]]) -> None:
    cells = [
        f"{f} {summary[f]['realised']:.0%} / {summary[f]['unchanged_error']:.3f} / "
        f"{summary[f]['success']:.0%}"
        for f in EDIT_FAMILIES
        if f in summary
    ]
    total = summary["all"]
    print(
        f"seen | {label} | {int(total['count'])} edits | realised {total['realised']:.1%} | "
        f"error {total['unchanged_error']:.3f} | success {total['success']:.1%} | "
        + " | ".join(cells)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="folder of `instructedit shapes reproduce`")
    parser.add_argument(
        "--editor", help="an editor folder, or 'default' for the embedded one (the run's)"
    )
    parser.add_argument("--examples", type=int, default=200, help="edits on each side")
    args = parser.parse_args()
    config = json.loads((args.run / "config.json").read_text(encoding="utf-8"))
    size, steps, tolerance = config["size"], config["eval_steps"], config["tolerance"]
    candidates = [
        _caption_edit(folder)
        for candidate_set in sorted(
            p for p in (args.run / "pairs").glob("candidates*") if p.is_dir()
        )
        for folder in sorted(p for p in candidate_set.iterdir() if (p / "prompt.json").is_file())
    ]
    trained = [_caption_edit(folder) for folder, _ in selection_folders(args.run, "filtered")]
    print("coverage | family | candidates: caption edits, distinct | training pairs, distinct")
    all_families, trained_families = _by_family(candidates), _by_family(trained)
    for family in EDIT_FAMILIES:
        every, kept = all_families[family], trained_families[family]
        print(
            f"coverage | {family} | {len(every)}, {len(set(every))} | {len(kept)}, {len(set(kept))}"
        )

    # Fresh renders of distinct training caption edits, an equal share per family (as the
    # held-out edits have).
    rng = random.Random(f"caption-coverage:{config['seed']}")
    seen = []
    for family in EDIT_FAMILIES:
        distinct = sorted(
            set(trained_families[family]), key=lambda e: (e.input, e.instruction, e.output)
        )
        rng.shuffle(distinct)
        chosen = []
        for known in distinct:
            if len(chosen) == args.examples // len(EDIT_FAMILIES):
                break
            scene = scene_from_caption(known.input, rng)
            edit = scene_edit(scene, known.instruction, seed=rng.randrange(2**31))
            if edit is not None and caption(edit.target) == known.output:
                chosen.append(edit)
        seen.extend(chosen)
    held_out = held_out_edits(args.examples, seed=config["seed"])
    trained_set = set(trained)
    overlap = sum(
        CaptionEdit(caption(e.source), e.instruction, caption(e.target)) in trained_set
        for e in held_out
    )

    if args.editor == "default":
        pipe = load_default()
    else:
        pipe = EditPipeline.from_pretrained(args.editor or args.run / "editor" / "model")
    print(
        "seen | edits | count | realised | error | success | per family: realised / error / success"
    )
    for label, edits in (
        (f"held-out ({overlap} of them trained on)", held_out),
        ("trained on", seen),
    ):
        if not edits:
            print(f"seen | {label} | no edits")
            continue
        outputs = pipeline_edits(
            pipe, edits, size=size, num_inference_steps=steps, seed=config["seed"], progress=False
        )
        _print_summary(label, oracle_summary(edits, outputs, size=size, tolerance=tolerance))


if __name__ == "__main__":
    main()
