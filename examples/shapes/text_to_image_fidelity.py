"""How often a ShapesWorld text-to-image model draws what its caption says, read back.

    python examples/shapes/text_to_image_fidelity.py outputs/shapes/text_to_image/model
    python examples/shapes/text_to_image_fidelity.py RUN_A/text_to_image/model RUN_B/...

Samples one image for each of 256 random captions (Python's ``random.Random("eval")`` draws the
scenes; batches of 128 seeded by their first index; 20 steps of the folder's scheduler, text
guidance 7.5, the recipe's pair settings) from each model folder and reads them back with
:func:`~instructedit.worlds.reading.caption_fidelity`: the share that shows the caption's
background and shape colours and nothing more (``colours``), and with the shapes' kinds
(``exact``), for one-shape and two-shape captions. Every pair comes from the text-to-image model,
so this bounds how many generated pairs can be correct. The research notes' text-to-image numbers
come from this protocol.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from instructedit.worlds.reading import caption_fidelity
from instructedit.worlds.shapes import caption, random_scene


def fidelity(
    pipe: StableDiffusionPipeline,
    captions: list[str],
    *,
    steps: int = 20,
    guidance: float = 7.5,
) -> dict[str, dict[str, float]]:
    """One sample per caption (batches of 128, each seeded by its first index), read back."""
    pipe.set_progress_bar_config(disable=True)
    images = []
    for start in range(0, len(captions), 128):
        with torch.no_grad():
            images += pipe(
                captions[start : start + 128],
                height=32,
                width=32,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=torch.Generator().manual_seed(start),
            ).images
    return caption_fidelity(images, captions)


def eval_captions(count: int = 256, seed: str = "eval") -> list[str]:
    """The protocol's captions: ``count`` random scenes drawn by ``random.Random(seed)``."""
    rng = random.Random(seed)
    return [caption(random_scene(rng)) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+", help="diffusers text-to-image folders")
    parser.add_argument("--captions", type=int, default=256)
    parser.add_argument("--seed", default="eval", help="seed string of the captions' scenes")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=7.5)
    args = parser.parse_args()

    captions = eval_captions(args.captions, args.seed)
    print("model | captions | colours | exact")
    for folder in args.models:
        pipe = StableDiffusionPipeline.from_pretrained(
            folder, safety_checker=None, requires_safety_checker=False
        )
        scores = fidelity(pipe, captions, steps=args.steps, guidance=args.guidance)
        for key, group in scores.items():
            print(
                f"{folder} | {key} ({group['count']:.0f}) | "
                f"{group['colours']:.1%} | {group['exact']:.1%}"
            )


if __name__ == "__main__":
    main()
