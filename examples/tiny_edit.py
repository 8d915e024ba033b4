"""Runs diffusers' InstructPix2Pix pipeline on instructedit's tiny offline components.

    python examples/tiny_edit.py --output outputs/tiny_edit.png

The weights are random, so the output is not a meaningful edit: the script shows how the tiny
components plug into diffusers for tests that must run offline and fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from diffusers import StableDiffusionInstructPix2PixPipeline

from instructedit.demo import example_image
from instructedit.testing import tiny_components


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("outputs/tiny_edit.png"))
    parser.add_argument("--instruction", default="make it snowy")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()

    pipe = StableDiffusionInstructPix2PixPipeline(
        **tiny_components(seed=0),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    edited = pipe(
        args.instruction,
        image=example_image(),
        num_inference_steps=args.steps,
        generator=torch.Generator().manual_seed(0),
    ).images[0]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    edited.save(args.output)
    print(args.output)


if __name__ == "__main__":
    main()
