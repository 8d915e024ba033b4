"""The paper's guidance sweep (Fig. 8) for any ShapesWorld editor, on held-out rendered scenes.

    python examples/shapes/sweep_editor.py outputs/shapes                      # the run's editor
    python examples/shapes/sweep_editor.py outputs/shapes \\
        --model outputs/shapes/ablations/ground_truth_large/model             # an ablation's

Each point edits the same held-out scenes (the recipe's first ``--scenes``) at one image guidance
scale s_I and reports CLIP directional similarity (did the edit follow the instruction?) and CLIP
image similarity to the input (how much was kept), scored by the run's own CLIP. In the paper,
raising s_I trades the first for the second.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from instructedit.clip import ClipScorer
from instructedit.evaluation import PAPER_IMAGE_SCALES, guidance_sweep
from instructedit.pipeline import EditPipeline
from instructedit.worlds.evaluation import held_out_edits
from instructedit.worlds.shapes import edit_record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="folder of `instructedit shapes reproduce`")
    parser.add_argument("--model", type=Path, help="editor folder (default: RUN/editor/model)")
    parser.add_argument("--scenes", type=int, default=48)
    parser.add_argument("--text-scale", type=float, default=7.5)
    parser.add_argument("--image-scales", type=float, nargs="+", default=list(PAPER_IMAGE_SCALES))
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    editor = EditPipeline.from_pretrained(args.model or args.run / "editor" / "model")
    scorer = ClipScorer.from_open_clip(f"local-dir:{args.run / 'clip' / 'model'}")
    # The recipe's held-out scenes: the first of its 200.
    examples = [edit_record(edit) for edit in held_out_edits(200, seed=0)[: args.scenes]]
    points = guidance_sweep(
        editor,
        scorer,
        examples,
        text_scale=args.text_scale,
        image_scales=tuple(args.image_scales),
        num_inference_steps=args.steps,
        seed=0,
    )
    print("s_I    CLIP direction  CLIP image")
    for point in points:
        print(
            f"{point.image_scale:<6g} {point.direction_similarity:.3f}           "
            f"{point.image_similarity:.3f}"
        )


if __name__ == "__main__":
    main()
