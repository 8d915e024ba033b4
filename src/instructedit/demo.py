"""The README's main job: edit a bundled ShapesWorld scene with the embedded default editor."""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from PIL import Image

from instructedit.images import load_image, save_png_atomic
from instructedit.worlds.shapes import Scene, Shape, render

__all__ = ["DEMO_SCENE", "demo_scene", "example_image", "run_demo"]

logger = logging.getLogger(__name__)


def example_image() -> Image.Image:
    """Returns the bundled 96×64 example photo-like scene (a red ball and a small house), as RGB;
    the examples use it with Stable-Diffusion-sized models."""
    with resources.files("instructedit").joinpath("assets/example.png").open("rb") as file:
        image = Image.open(file)
        image.load()
    return image.convert("RGB")


DEMO_SCENE = Scene(
    "white",
    (Shape("circle", "red", 0.3, 0.32, 0.18), Shape("square", "blue", 0.7, 0.7, 0.16)),
)
"""The bundled scene the demo edits: a red circle and a blue square on a white background."""


def demo_scene(size: int = 32) -> Image.Image:
    """The demo's input: :data:`DEMO_SCENE` rendered at ``size``."""
    return render(DEMO_SCENE, size)


def run_demo(
    output: Path = Path("outputs/demo.png"),
    *,
    instruction: str = "put it on a black background",
    image: Path | None = None,
    steps: int = 20,
    seed: int = 0,
    scale: int = 8,
) -> Path:
    """Edits a bundled ShapesWorld scene with the embedded default editor (offline, CPU).

    Writes the input and the edit side by side (enlarged), plus the edit at its own size.

    The default editor (:func:`instructedit.default.load_default`) was trained by the ShapesWorld recipe
    on pairs its own text-to-image model generated; it recolours shapes, changes backgrounds and
    adds or removes shapes in 32×32 scenes. When the bundled scene is edited, the ShapesWorld
    oracle's verdict is logged (whether the edit happened, how much the rest changed).

    Args:
        output: where to write the side-by-side PNG; the edit alone goes next to it as
            ``<name>-edit.png``. Parent folders are created.
        instruction: the edit instruction, e.g. "make the circle green", "put it on a black
            background", "remove the square", "add a yellow triangle".
        image: an image file to edit instead of the bundled scene (resized to 32×32).
        steps: denoising steps, at least 1.
        seed: seed of the sampling noise.
        scale: enlargement of the side-by-side image (nearest neighbour), at least 1.

    Returns:
        The path of the side-by-side image.
    """
    if not instruction.strip():
        raise ValueError("instruction must be a non-empty string, got an empty one")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if scale < 1:
        raise ValueError(f"scale must be at least 1, got {scale}")
    source = demo_scene() if image is None else load_image(image).resize((32, 32))
    import torch

    from instructedit.default import load_default

    pipe = load_default()
    edited = pipe(
        source,
        instruction,
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(seed),
        progress=False,
    ).images[0]
    assert isinstance(edited, Image.Image)  # output_type="pil"
    if image is None:
        _log_verdict(instruction, edited)
    side = source.width * scale
    canvas = Image.new("RGB", (2 * side, side))
    canvas.paste(source.resize((side, side), Image.Resampling.NEAREST), (0, 0))
    canvas.paste(edited.resize((side, side), Image.Resampling.NEAREST), (side, 0))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_png_atomic(canvas, output)
    save_png_atomic(edited, output.with_name(f"{output.stem}-edit.png"))
    logger.info("wrote %s", output)
    return output


def _log_verdict(instruction: str, edited: Image.Image) -> None:
    """Logs the oracle's verdict when ``instruction`` names an edit of the bundled scene."""
    from instructedit.worlds.shapes import judge, scene_edit

    edit = scene_edit(DEMO_SCENE, instruction)
    if edit is None:
        logger.info("the oracle does not know the instruction %r: no verdict", instruction)
        return
    verdict = judge(edit, edited)
    logger.info(
        "oracle: edit %s; unchanged-region error %.3f (pixels in [0, 1]); the rest %s",
        "realised" if verdict.realised else "NOT realised",
        verdict.unchanged_error,
        verdict.rest,
    )
