"""Renders the README's picture: edits of ShapesWorld scenes by the embedded default editor.

    python examples/readme_figure.py                                # docs/_static/readme.png
    python examples/readme_figure.py --output outputs/readme.png --scale 6

One column per edit: the instruction, the input scene, the default editor's output (20 steps,
seed 0, the guidance it ships with) enlarged with nearest-neighbour, and the oracle's verdict
(:func:`instructedit.worlds.shapes.judge`). The edits shown are ones the editor gets right; on
200 held-out scenes it succeeds in 45 % (``instructedit shapes evaluate``). The default ships no
text-to-image model, so the picture holds no Prompt-to-Prompt pair.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

import instructedit
from instructedit.worlds.evaluation import oracle_summary
from instructedit.worlds.shapes import Scene, Shape, judge, render, scene_edit

EDITS: tuple[tuple[Scene, str], ...] = (
    (Scene("orange", (Shape("square", "blue", 0.3, 0.3, 0.16),)), "make the square green"),
    (Scene("blue", (Shape("square", "yellow", 0.5, 0.5, 0.22),)), "make the square red"),
    (
        Scene("black", (Shape("triangle", "yellow", 0.5, 0.45, 0.26),)),
        "put it on a purple background",
    ),
    (Scene("blue", (Shape("square", "yellow", 0.5, 0.5, 0.22),)), "make the background black"),
    (Scene("green", (Shape("square", "white", 0.45, 0.55, 0.22),)), "add a red circle"),
    (
        Scene(
            "purple",
            (Shape("circle", "white", 0.3, 0.3, 0.17), Shape("triangle", "yellow", 0.7, 0.7, 0.17)),
        ),
        "take away the triangle",
    ),
)
"""(scene, instruction), one per column: two recolours, two background changes, an addition and
a removal, chosen among the edits the oracle judges successes at seed 0."""

MARGIN = 8
TEXT_HEIGHT = 30


def verdict_text(scene: Scene, instruction: str, edited: Image.Image) -> str:
    """The oracle's verdict on one edit, in a few words."""
    edit = scene_edit(scene, instruction)
    if edit is None:
        raise ValueError(f"the oracle does not know {instruction!r} for {scene}")
    verdict = judge(edit, edited)
    if oracle_summary([edit], [edited])["all"]["success"] == 1.0:
        return f"oracle: success\nerror {verdict.unchanged_error:.3f}"
    realised = "realised" if verdict.realised else "not realised"
    return f"oracle: {realised},\nrest {verdict.rest}"


def figure(pipe: instructedit.EditPipeline, *, scale: int, seed: int) -> Image.Image:
    """The grid: per column the instruction, the input, the output and the verdict."""
    font = ImageFont.load_default(size=12)
    side = 32 * scale
    width = len(EDITS) * (side + MARGIN) + MARGIN
    height = 2 * side + 2 * TEXT_HEIGHT + 3 * MARGIN
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for column, (scene, instruction) in enumerate(EDITS):
        source = render(scene)
        generator = torch.Generator().manual_seed(seed)
        result = pipe(
            source, instruction, num_inference_steps=20, generator=generator, progress=False
        )
        edited = result.images[0]
        assert isinstance(edited, Image.Image)  # output_type="pil"
        verdict = verdict_text(scene, instruction, edited)
        print(f"{instruction!r}: {verdict.replace(chr(10), ' ')}")
        left = MARGIN + column * (side + MARGIN)
        label = "\n".join(textwrap.wrap(f"“{instruction}”", width=side // 6))
        draw.multiline_text((left, MARGIN), label, fill="black", font=font, spacing=2)
        top = MARGIN + TEXT_HEIGHT
        sheet.paste(source.resize((side, side), Image.Resampling.NEAREST), (left, top))
        top += side + MARGIN
        sheet.paste(edited.resize((side, side), Image.Resampling.NEAREST), (left, top))
        draw.multiline_text((left, top + side + 2), verdict, fill="dimgray", font=font, spacing=2)
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("docs/_static/readme.png"))
    parser.add_argument("--scale", type=int, default=4, help="enlargement of the 32×32 scenes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling noise")
    args = parser.parse_args()

    sheet = figure(instructedit.load_default(), scale=args.scale, seed=args.seed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.output, optimize=True)
    print(args.output)


if __name__ == "__main__":
    main()
