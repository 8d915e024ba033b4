"""Edit an image with EditPipeline: a real checkpoint, or the tiny offline components.

    python examples/edit_image.py photo.jpg "make it snowy" --model timbrooks/instruct-pix2pix
    python examples/edit_image.py --tiny            # offline: bundled image, tiny random weights

Shows the s_I trade-off: one output per image guidance scale, side by side with the input.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from instructedit import EditPipeline
from instructedit.demo import example_image
from instructedit.pipeline import load_image
from instructedit.testing import tiny_components


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "image", nargs="?", type=Path, help="input image (default: bundled example)"
    )
    parser.add_argument("instruction", nargs="?", default="make it snowy")
    parser.add_argument("--model", default="timbrooks/instruct-pix2pix")
    parser.add_argument(
        "--tiny", action="store_true", help="use the tiny random offline components"
    )
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--output", type=Path, default=Path("outputs/edit_sweep.png"))
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.tiny:
        pipe = EditPipeline(**tiny_components(seed=0))
        steps = args.steps or 20
    else:
        dtype = torch.float16 if device == "cuda" else torch.float32
        pipe = EditPipeline.from_pretrained(args.model, torch_dtype=dtype).to(device)
        steps = args.steps or 100
    source = load_image(args.image) if args.image else example_image()
    tiles = [source]
    for image_scale in (1.0, 1.5, 2.0):
        result = pipe(
            source,
            args.instruction,
            num_inference_steps=steps,
            image_guidance_scale=image_scale,
            generator=torch.Generator(device).manual_seed(0),
        )
        tiles.append(result.images[0].resize(source.size))
    sheet = Image.new("RGB", (source.width * len(tiles), source.height))
    for index, tile in enumerate(tiles):
        sheet.paste(tile, (index * source.width, 0))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.output)
    print(args.output)


if __name__ == "__main__":
    main()
