import io

import numpy as np
import pytest
import torch
from PIL import Image

from instructedit import EditPipeline
from instructedit.pipeline import load_image, official_size, prepare_image
from instructedit.testing import tiny_components


def test_official_size_follows_the_reference_formula():
    # Hand computation: f = 512/768; short side 512·f = 341.3 → ceil to 384; f' = 384/512;
    # sides floored to 64: 768·0.75 = 576, 512·0.75 = 384.
    assert official_size(768, 512, 512) == (576, 384)
    assert official_size(512, 512, 512) == (512, 512)
    assert official_size(1000, 300, 512) == (640, 192)
    assert official_size(300, 1000, 512) == (192, 640)


def test_prepare_image_default_floors_to_multiples_of_8():
    image = Image.new("RGB", (37, 29), "red")
    assert prepare_image(image).size == (32, 24)
    same = Image.new("RGB", (40, 16), "red")
    assert prepare_image(same) is same


def test_prepare_image_official_resizes_and_crops():
    image = Image.new("RGB", (768, 512), "red")
    assert prepare_image(image, resize="official", resolution=512).size == (576, 384)
    with pytest.raises(ValueError, match="resize must be"):
        prepare_image(image, resize="square")  # type: ignore[arg-type]


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 16), "blue")
    image.paste(Image.new("RGB", (8, 16), "red"), (0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif.tobytes(), quality=100)
    loaded = load_image(path)
    assert loaded.size == (16, 40)
    top = np.asarray(loaded)[:4].mean(axis=(0, 1))
    assert top[0] > 200  # the red strip is now on top
    assert top[2] < 60


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.new("RGBA", (8, 8), (255, 0, 0, 0)), (255, 255, 255)),  # transparent → white
        (Image.new("RGBA", (8, 8), (255, 0, 0, 255)), (255, 0, 0)),
        (Image.new("LA", (8, 8), (0, 255)), (0, 0, 0)),
        (Image.new("L", (8, 8), 128), (128, 128, 128)),
        (Image.new("CMYK", (8, 8), (0, 255, 255, 0)), (255, 0, 0)),
        (Image.new("P", (8, 8), 0), (0, 0, 0)),
    ],
)
def test_modes_become_rgb(image, expected):
    loaded = load_image(image)
    assert loaded.mode == "RGB"
    assert tuple(np.asarray(loaded)[0, 0]) == expected


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    array = np.full((8, 8), 32768, dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(array).save(path)
    loaded = load_image(path)
    assert loaded.mode == "RGB"
    assert abs(int(np.asarray(loaded)[0, 0, 0]) - 128) <= 1
    assert abs(int(np.asarray(load_image(array))[0, 0, 0]) - 128) <= 1


def test_palette_with_transparency(tmp_path):
    image = Image.new("P", (8, 8), 0)
    image.putpalette([255, 0, 0] * 256)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=0)
    buffer.seek(0)
    assert tuple(np.asarray(load_image(Image.open(buffer)))[0, 0]) == (255, 255, 255)


def test_arrays_and_tensors():
    gray = np.full((8, 8), 0.5, dtype=np.float32)
    assert tuple(np.asarray(load_image(gray))[0, 0]) == (128, 128, 128)
    tensor = torch.zeros(3, 8, 8)
    tensor[0] = 1.0
    assert tuple(np.asarray(load_image(tensor))[0, 0]) == (255, 0, 0)
    with pytest.raises(ValueError, match="NaN"):
        load_image(np.full((8, 8), np.nan, dtype=np.float32))


def test_odd_sized_image_edits_at_floored_size():
    pipe = EditPipeline(**tiny_components(seed=0))
    out = pipe(
        Image.new("RGB", (37, 29), "green"), "x", num_inference_steps=2, progress=False
    ).images[0]
    assert out.size == (32, 24)
