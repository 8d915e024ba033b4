"""Where a ShapesWorld editor's unchanged-region error comes from.

    python examples/shapes/diagnose_editor.py outputs/shapes
    python examples/shapes/diagnose_editor.py outputs/shapes --editor outputs/shapes/editor/model-2500
    python examples/shapes/diagnose_editor.py outputs/shapes --schedulers euler_ancestral euler ddim
    python examples/shapes/diagnose_editor.py outputs/shapes --worst 8 --figures diagnosis/

Prints five measurements of the editor of a run of ``instructedit shapes reproduce`` (or of
``--editor``):

1. ``held-out``: per edit family, the spread of its unchanged-region error on the run's held-out
   rendered scenes (the oracle's :func:`~instructedit.worlds.shapes.judge`, the editor's stored guidance):
   quantiles and the share under the run's tolerance;
2. ``rest``: per edit family, what became of the regions the edit leaves alone
   (:attr:`~instructedit.worlds.shapes.Judgement.rest`): all intact, the edit's new colour spilled
   onto one (a recolour painting the background, a removal erasing both shapes, an addition drawn
   over a kept shape), or one redrawn in another colour. With ``--worst K``, ``--figures`` gets
   ``worst-FAMILY.png``: the family's ``K`` worst edits (input, ground truth, output; those whose
   rest is not intact first, then by unchanged error), whose instructions are printed;
3. ``pairs``: the same error in the run's training pairs, read from the generated images
   themselves (:func:`~instructedit.worlds.reading.pair_unchanged_error`: the mean absolute
   difference between edited and input image where the edit family says nothing changes). An
   editor cannot be expected to keep more than its pairs kept;
4. ``gap``: the editor's edits of generated inputs it did not train on (candidates the filter did
   not keep, whose input shows its caption) against its edits of rendered inputs, both read back
   with :func:`~instructedit.worlds.reading.check_pair` (colours and layout, not kinds). The
   generated inputs' caption edits are the run's own, which the editor trained on through other
   candidates of the same caption edit, and the held-out ones are new to it: the difference
   mixes the change of domain with caption-edit coverage, which
   ``examples/shapes/caption_coverage.py`` separates (it was coverage: the same scenes
   re-rendered edit as well as drawn);
5. ``sampler``: with ``--schedulers``, the oracle's scores with each sampler (same noise seeds;
   ``--steps``: sampler steps, the run's by default).
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch

from instructedit import EditPipeline
from instructedit.data import load_folder_sample
from instructedit.worlds.evaluation import (
    edit_grid,
    held_out_edits,
    oracle_summary,
    pipeline_edits,
)
from instructedit.worlds.reading import (
    check_pair,
    pair_family,
    pair_unchanged_error,
    read_scene,
)
from instructedit.worlds.recipe import load_selection, selection_folders
from instructedit.worlds.shapes import EDIT_FAMILIES, caption, judge, render


def _quantiles(values: list[float]) -> str:
    if not values:
        return "none"
    q = np.quantile(values, [0.1, 0.25, 0.5, 0.75, 0.9])
    return " ".join(f"{v:.3f}" for v in q)


def _read_back(inputs, outputs, captions, size: int) -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for image, output, (before, after) in zip(inputs, outputs, captions, strict=True):
        check = check_pair(image, output, before, after, size=size, kinds=False)
        counts[check.family]["n"] += 1
        counts[check.family]["correct"] += check.correct
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="folder of `instructedit shapes reproduce`")
    parser.add_argument("--editor", type=Path, help="an editor folder (default: the run's)")
    parser.add_argument("--gap-examples", type=int, default=160)
    parser.add_argument("--schedulers", nargs="*", default=[])
    parser.add_argument("--steps", type=int, help="sampler steps of --schedulers (the run's)")
    parser.add_argument("--worst", type=int, default=0, help="figure of each family's K worst")
    parser.add_argument("--figures", type=Path, help="folder for --worst's figures")
    args = parser.parse_args()
    if args.worst and args.figures is None:
        parser.error("--worst needs --figures (a folder for its figures)")
    config = json.loads((args.run / "config.json").read_text())
    size, steps, tolerance = config["size"], config["eval_steps"], config["tolerance"]
    editor = args.editor or args.run / "editor" / "model"
    pipe = EditPipeline.from_pretrained(editor)

    edits = held_out_edits(config["eval_scenes"], seed=config["seed"])
    outputs = pipeline_edits(pipe, edits, size=size, num_inference_steps=steps, progress=False)
    verdicts = [judge(e, o, size=size) for e, o in zip(edits, outputs, strict=True)]
    errors: dict[str, list[float]] = defaultdict(list)
    rests: dict[str, Counter[str]] = defaultdict(Counter)
    for edit, verdict in zip(edits, verdicts, strict=True):
        errors[edit.family].append(verdict.unchanged_error)
        rests[edit.family][verdict.rest] += 1
    print(f"held-out | family | n | error quantiles 10/25/50/75/90 % | share <= {tolerance}")
    for family in EDIT_FAMILIES:
        values = errors[family]
        share = np.mean(np.asarray(values) <= tolerance) if values else float("nan")
        print(f"held-out | {family} | {len(values)} | {_quantiles(values)} | {share:.2f}")
    print("rest | family | intact | new colour spilled onto a kept region | one redrawn")
    for family in EDIT_FAMILIES:
        counts, total = rests[family], max(1, sum(rests[family].values()))
        print(
            f"rest | {family} | {counts['intact'] / total:.0%} | "
            f"{counts['spilled'] / total:.0%} | {counts['redrawn'] / total:.0%}"
        )
    if args.worst:
        args.figures.mkdir(parents=True, exist_ok=True)
        for family in EDIT_FAMILIES:
            # Those whose rest is not intact first, then by unchanged error.
            worst = sorted(
                (i for i, edit in enumerate(edits) if edit.family == family),
                key=lambda i: (verdicts[i].rest == "intact", -verdicts[i].unchanged_error),
            )[: args.worst]
            for i in worst:
                print(
                    f"worst | {family} | {verdicts[i].rest} | {verdicts[i].unchanged_error:.3f} | "
                    f"{edits[i].instruction}"
                )
            figure = edit_grid(
                [edits[i] for i in worst], {"editor": [outputs[i] for i in worst]}, size=size
            )
            figure.save(args.figures / f"worst-{family}.png")

    pair_errors: dict[str, list[float]] = defaultdict(list)
    for record in load_selection(args.run, "filtered"):
        family = pair_family(record.input_caption, record.output_caption)
        error = pair_unchanged_error(
            record.input_image,
            record.edited_image,
            record.input_caption,
            record.output_caption,
            size=size,
        )
        if error is not None:
            pair_errors[family].append(error)
    print("pairs | family | n | error quantiles 10/25/50/75/90 % | mean")
    for family in EDIT_FAMILIES:
        values = pair_errors[family]
        mean = f"{np.mean(values):.3f}" if values else "none"
        print(f"pairs | {family} | {len(values)} | {_quantiles(values)} | {mean}")

    # Generated inputs the editor did not train on, that show their captions, in a seeded order
    # (from every candidate set of the run).
    trained = {
        (folder.parent.name, folder.name, seed) for folder, seed in selection_folders(args.run)
    }
    untrained = [
        (candidates.name, folder.name, int(path.name.split("_")[0]))
        for candidates in sorted(p for p in (args.run / "pairs").glob("candidates*") if p.is_dir())
        for folder in sorted(p for p in candidates.iterdir() if p.is_dir())
        for path in sorted(folder.glob("*_0.jpg"))
        if (candidates.name, folder.name, int(path.name.split("_")[0])) not in trained
    ]
    random.Random(1).shuffle(untrained)
    generated = []
    for candidates, name, seed in untrained:
        if len(generated) == args.gap_examples:
            break
        record = load_folder_sample(args.run / "pairs" / candidates, name, seed)
        if read_scene(record.input_image, size=size).shows(record.input_caption, kinds=False):
            generated.append(record)
    inputs = [r.input_image for r in generated]
    # Example i gets the noise of seed i, as the held-out edits above did.
    edited = (
        pipe(
            inputs,
            [r.edit_prompt for r in generated],
            num_inference_steps=steps,
            generator=[torch.Generator().manual_seed(i) for i in range(len(inputs))],
            progress=False,
        ).images
        if generated
        else []
    )
    gap = {
        "generated": _read_back(
            inputs, edited, [(r.input_caption, r.output_caption) for r in generated], size
        ),
        # The held-out edits' own outputs, read back the same way.
        "rendered": _read_back(
            [render(edit.source, size) for edit in edits[: args.gap_examples]],
            outputs[: args.gap_examples],
            [(caption(e.source), caption(e.target)) for e in edits[: args.gap_examples]],
            size,
        ),
    }
    print("gap | inputs | " + " | ".join(EDIT_FAMILIES) + " (edits read back as correct)")
    for name, counts in gap.items():
        shares = [
            f"{counts[f]['correct'] / counts[f]['n']:.0%} of {counts[f]['n']}"
            if counts[f]["n"]
            else "none"
            for f in EDIT_FAMILIES
        ]
        print(f"gap | {name} | " + " | ".join(shares))

    for scheduler in args.schedulers:
        other = EditPipeline.from_pretrained(editor, scheduler=scheduler)
        images = pipeline_edits(
            other, edits, size=size, num_inference_steps=args.steps or steps, progress=False
        )
        summary = oracle_summary(edits, images, size=size, tolerance=tolerance)["all"]
        print(
            f"sampler | {scheduler}, {args.steps or steps} steps | realised "
            f"{summary['realised']:.1%} | error {summary['unchanged_error']:.3f} | success "
            f"{summary['success']:.1%}"
        )


if __name__ == "__main__":
    main()
