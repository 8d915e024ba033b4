import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def noise_image():
    """A 32×24 RGB image of uniform noise (sides are multiples of 8: no resize anywhere)."""
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
