"""The README's main job: edit the bundled example image with an instruction."""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from PIL import Image

__all__ = ["example_image", "run_demo"]

logger = logging.getLogger(__name__)


def example_image() -> Image.Image:
    """Returns the bundled 96×64 example scene (a red ball and a small house), as RGB."""
    with resources.files("instructedit").joinpath("assets/example.png").open("rb") as file:
        image = Image.open(file)
        image.load()
    return image.convert("RGB")


def run_demo(
    output: Path = Path("outputs/demo.png"),
    *,
    instruction: str = "make it snowy",
    steps: int = 20,
    seed: int = 0,
) -> Path:
    """Edits the bundled example image and writes the input and the edit side by side.

    No trained editor ships yet, so the edit runs on the tiny, randomly initialised components of
    :mod:`instructedit.testing` through :class:`~instructedit.pipeline.EditPipeline`: it exercises
    the whole editing path (tokenizer, text encoder, VAE, 8-channel UNet, dual guidance, fused
    scheduler step) offline, but its output is not a meaningful edit.

    Args:
        output: where to write the PNG (input left, edit right). Parent folders are created.
        instruction: the edit instruction.
        steps: denoising steps, at least 1.
        seed: seed of the sampling noise.

    Returns:
        The path of the written image.
    """
    if not instruction.strip():
        raise ValueError("instruction must be a non-empty string, got an empty one")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    import torch

    from instructedit.pipeline import EditPipeline
    from instructedit.testing import tiny_components

    logger.warning(
        "instructedit ships no trained editor yet: the demo runs on tiny random weights, "
        "so the result shows the pipeline working, not a real edit"
    )
    source = example_image()
    pipe = EditPipeline(**tiny_components(seed=0))
    result = pipe(
        source,
        instruction,
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(seed),
        output_type="pil",
    )
    edited = result.images[0].resize(source.size)
    canvas = Image.new("RGB", (source.width * 2, source.height))
    canvas.paste(source, (0, 0))
    canvas.paste(edited, (source.width, 0))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.with_name(f".{output.name}.partial")
    canvas.save(staging, format="PNG")
    staging.replace(output)
    logger.info("wrote %s", output)
    return output
