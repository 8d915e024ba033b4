import math

import numpy as np
import pytest
import torch
from PIL import Image

from instructedit import EditPipeline
from instructedit.testing import tiny_components


class ExplodingUNet:
    """Stands in for the UNet's forward: any call means validation came too late."""

    def __call__(self, *args, **kwargs):
        raise AssertionError("the model ran before the input was validated")


@pytest.fixture
def pipe():
    pipeline = EditPipeline(**tiny_components(seed=0))
    pipeline._unet_forward = ExplodingUNet()
    return pipeline


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"instruction": ""}, ValueError, r"instruction\[0\] is empty"),
        ({"instruction": ["ok", "  "]}, ValueError, r"instruction\[1\] is empty"),
        ({"guidance_scale": -1.0}, ValueError, "guidance_scale must be a finite number >= 0"),
        ({"image_guidance_scale": math.nan}, ValueError, "image_guidance_scale must be a finite"),
        ({"num_inference_steps": 0}, ValueError, "num_inference_steps must be an int >= 1"),
        ({"num_images_per_instruction": 0}, ValueError, "num_images_per_instruction"),
        ({"output_type": "jpeg"}, ValueError, "output_type must be one of"),
        ({"image": Image.new("RGB", (0, 0))}, ValueError, r"image\[0\]: image is empty"),
        ({"image": Image.new("RGB", (4, 4))}, ValueError, "smaller than the minimum side 8"),
        (
            {"image": Image.new("RGB", (64, 64)), "max_pixels": 1000},
            ValueError,
            "exceeds max_pixels=1000",
        ),
        ({"image": 42}, TypeError, r"image\[0\] must be a PIL image"),
        (
            {"image": [Image.new("RGB", (8, 8))] * 2, "instruction": ["a", "b", "c"]},
            ValueError,
            "2 images and 3",
        ),
        (
            {"image": [Image.new("RGB", (8, 8)), Image.new("RGB", (16, 8))]},
            ValueError,
            "share a size",
        ),
        ({"generator": [torch.Generator()] * 3}, ValueError, "3 generators for 1 output"),
        ({"latents": torch.zeros(1, 4, 3, 3)}, ValueError, "latents must have shape"),
    ],
)
def test_bad_input_is_rejected_before_any_model_runs(pipe, kwargs, error, message):
    arguments = {
        "image": Image.new("RGB", (16, 16)),
        "instruction": "make it snowy",
        "progress": False,
    }
    arguments.update(kwargs)
    image = arguments.pop("image")
    instruction = arguments.pop("instruction")
    with pytest.raises(error, match=message):
        pipe(image, instruction, **arguments)


def test_not_an_image_file(pipe, tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a PNG")
    with pytest.raises(ValueError, match=r"image\[0\]: .*notes.png is not a readable image"):
        pipe(path, "make it snowy", progress=False)
    with pytest.raises(FileNotFoundError, match="no such file"):
        pipe(tmp_path / "missing.png", "make it snowy", progress=False)


def test_truncated_file_is_rejected(pipe, tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        path
    )
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="not a readable image"):
        pipe(path, "make it snowy", progress=False)
