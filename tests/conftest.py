"""Shared test setup: offline, with a private cache folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keeps files the tests derive (the CLIP vocabulary) out of the user's cache."""
    previous = os.environ.get("INSTRUCTEDIT_CACHE")
    path = tmp_path_factory.mktemp("instructedit-cache")
    os.environ["INSTRUCTEDIT_CACHE"] = str(path)
    yield path
    if previous is None:
        del os.environ["INSTRUCTEDIT_CACHE"]
    else:
        os.environ["INSTRUCTEDIT_CACHE"] = previous


@pytest.fixture
def noise_image() -> Image.Image:
    """A 32×24 RGB image of uniform noise (sides are multiples of 8: no resize anywhere)."""
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
