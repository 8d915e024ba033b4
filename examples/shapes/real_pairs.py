"""Editors trained on pairs made from real images (inversion-free editing) against editors
trained on generated pairs and on the renderer's ground truth, on the held-out oracle.

    python examples/shapes/real_pairs.py --t2i outputs/shapes-t2i --output outputs/real-pairs

Rendered ShapesWorld scenes play the real images. The same captions (random scenes, seeded) and
the same caption edits (:class:`~instructedit.worlds.shapes.ShapesCaptionEditor`) make three
training sets of equal size:

* ``generated``: the paper's pairs, both images drawn by the text-to-image model from the two
  captions (Prompt-to-Prompt, the recipe's cross-attention control at p = 0.8);
* ``real``: each caption's rendered scene is the input, edited into the output caption by
  virtual inversion with InfEdit's unified attention control (``--images``'s path:
  ``real_method="virtual"``, ``control="cross_attention"``, a target blend around the edited
  words);
* ``ground_truth``: the renderer's own edits of the scenes (the recipe's ground-truth ablation).

Each caption edit draws ``--samples`` candidates and keeps the one of best CLIP direction (the
embedded ShapesWorld CLIP). Each editor starts from the text-to-image UNet of ``--t2i`` (the
model :mod:`real_inversion` trains), trains ``--steps`` steps like the recipe's ablation editors,
and edits the held-out scenes at the paper's guidance. Every stage is resumable: rerun to
continue; a rerun with a larger ``--steps`` trains the editors on from where they stopped.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from real_inversion import text_to_image  # the same folder; trains the model when missing

from instructedit.clip import ClipDirectionalFilter
from instructedit.data import read_folder_dataset
from instructedit.datagen import GenerationConfig, generate_dataset
from instructedit.default import default_clip_dir, load_default_clip
from instructedit.guidance import DualGuidance
from instructedit.worlds.recipe import RecipeConfig
from instructedit.worlds.recipe._candidates import ground_truth_records
from instructedit.worlds.recipe._editor import _train_editor, evaluate_editor
from instructedit.worlds.shapes import ShapesCaptionEditor, caption, random_scene, render

SIDES = ("generated", "real", "ground_truth")


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(target.resolve(), target_is_directory=True)


def _pairs(side: str, root: Path, config: RecipeConfig, samples: int) -> list:
    """The side's training records (rendered once, resumable)."""
    rng = random.Random(f"captions:{config.seed}")
    scenes = [random_scene(rng) for _ in range(config.captions)]
    captions = [caption(scene) for scene in scenes]
    from instructedit.p2p import PromptToPrompt

    p2p = PromptToPrompt.from_pretrained(root / "text_to_image" / "model", scheduler="ddim")
    common = {
        "samples_per_pair": samples,
        "keep_per_pair": 1,
        "batch_size": samples,
        "num_inference_steps": config.generation_steps,
        "guidance_range": (7.5, 7.5),
        "seed": config.seed,
        "height": config.size,
        "width": config.size,
    }
    if side == "generated":
        settings = GenerationConfig(**common, control="cross_attention", injection_range=(0.8, 0.8))
        images = None
    else:
        settings = GenerationConfig(
            **common,
            control="cross_attention",
            injection_range=(0.7, 0.7),
            local_blend=0.3,
            real_method="virtual",
        )
        images = [render(scene, config.size) for scene in scenes]
    folder = root / side / "pairs"
    start = time.perf_counter()
    generate_dataset(
        captions,
        folder,
        caption_editor=ShapesCaptionEditor(seed=config.seed),
        p2p=p2p,
        # Score every candidate; keep the best direction of each caption edit.
        clip_filter=ClipDirectionalFilter(load_default_clip(), -1.0, -1.0, -1.0),
        config=settings,
        images=images,
    )
    print(f"{side}: pairs in {time.perf_counter() - start:.0f} s")
    return list(read_folder_dataset(folder))


def _figure(root: Path, config: RecipeConfig, count: int = 8) -> Path:
    """A grid of the first ``count`` caption edits: the scene and its real-image edit, the
    generated pair, the renderer's ground truth (4× nearest-neighbour)."""
    import numpy as np
    from PIL import Image

    from instructedit.data import load_folder_sample
    from instructedit.worlds.shapes import apply_edit, scene_edit

    rng = random.Random(f"captions:{config.seed}")
    scenes = [random_scene(rng) for _ in range(config.captions)]
    rows = []
    for index, scene in enumerate(scenes):
        name = f"{index:07d}"
        folders = [root / side / "pairs" / name for side in ("real", "generated")]
        if not all((folder / "prompt.json").is_file() for folder in folders):
            continue
        seeds = [int(next(folder.glob("*_0.jpg")).name.split("_")[0]) for folder in folders]
        real, generated = (
            load_folder_sample(folder.parent, folder.name, seed)
            for folder, seed in zip(folders, seeds, strict=True)
        )
        edit = scene_edit(scene, real.edit_prompt)
        truth = apply_edit(edit, config.size) if edit is not None else render(scene, config.size)
        tiles = [
            real.input_image,
            real.edited_image,
            generated.input_image,
            generated.edited_image,
            truth,
        ]
        rows.append(np.concatenate([np.asarray(t.resize((128, 128), 0)) for t in tiles], 1))
        if len(rows) == count:
            break
    path = root / "pairs.png"
    Image.fromarray(np.concatenate(rows, 0)).save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--t2i", type=Path, default=Path("outputs/shapes-t2i"))
    parser.add_argument("--output", type=Path, default=Path("outputs/real-pairs"))
    parser.add_argument("--captions", type=int, default=400)
    parser.add_argument("--samples", type=int, default=4, help="candidates per caption edit")
    parser.add_argument("--steps", type=int, default=1000, help="editor training steps")
    parser.add_argument("--scenes", type=int, default=200, help="held-out edits")
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    args = parser.parse_args()
    root = args.output
    text_to_image(args.t2i, 1500)
    _link(root / "text_to_image" / "model", args.t2i / "model")
    _link(root / "clip" / "model", default_clip_dir())
    config = RecipeConfig(output_dir=str(root), captions=args.captions, eval_scenes=args.scenes)
    counts: dict[str, int] = {}
    for side in args.sides:
        marker = root / side / "DONE.json"
        if marker.is_file() and json.loads(marker.read_text())["steps"] == args.steps:
            continue  # a larger --steps continues the editor from its last checkpoint
        if side == "ground_truth":
            generated = root / "generated" / "DONE.json"
            if not generated.is_file():
                raise SystemExit("run the generated side first: it sets the number of pairs")
            # The same number of pairs as the generated side.
            count = len(list(read_folder_dataset(root / "generated" / "pairs")))
            records = ground_truth_records(count, config)
        else:
            records = _pairs(side, root, config, args.samples)
        counts[side] = len(records)
        start = time.perf_counter()
        record = _train_editor(config, root, records, root / side, args.steps)
        record.update(evaluate_editor(root / side / "model", config, DualGuidance()))
        record["seconds"] = round(time.perf_counter() - start, 1)
        marker.write_text(json.dumps(record, indent=1))
        print(f"{side}: editor and evaluation in {record['seconds']:.0f} s")
    if all((root / side / "DONE.json").is_file() for side in ("real", "generated")):
        print(f"pairs: {_figure(root, config)} (scene, its edit; generated pair; ground truth)")
    print()
    print(f"{args.scenes} held-out edits, the paper's guidance (7.5, 1.5)")
    print()
    print(
        "| training pairs | pairs | editor steps | realised | success | rest intact | "
        "unchanged error | CLIP direction |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for side in SIDES:
        marker = root / side / "DONE.json"
        if not marker.is_file():
            continue
        record = json.loads(marker.read_text())
        oracle = record["oracle"]["all"]
        print(
            f"| {side} | {record['examples']} | {record['steps']} | {oracle['realised']:.1%} | "
            f"{oracle['success']:.1%} | {oracle.get('intact', float('nan')):.1%} | "
            f"{oracle['unchanged_error']:.3f} | {record['clip']['direction_similarity']:.3f} |"
        )


if __name__ == "__main__":
    main()
