import numpy as np
import pytest
from PIL import Image

from instructedit.data import EditRecord, FolderSample, write_caption_folder, write_seeds_index

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}


def colour_records(count=16, size=16, seed=0):
    """Tiny ground-truth edits: a square recoloured as the instruction says."""
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    records = []
    for _ in range(count):
        old, new = rng.choice(names, 2, replace=False)
        background = tuple(int(v) for v in rng.integers(0, 256, 3))
        before = np.full((size, size, 3), background, np.uint8)
        after = before.copy()
        before[4:12, 4:12] = COLOURS[old]
        after[4:12, 4:12] = COLOURS[new]
        records.append(
            EditRecord(
                Image.fromarray(before),
                f"make the square {new}",
                Image.fromarray(after),
                f"a {old} square",
                f"a {new} square",
            )
        )
    return records


@pytest.fixture
def records():
    return colour_records()


@pytest.fixture
def make_folder_dataset():
    """Writes records as the official folder layout (one caption folder per record)."""

    def write(root, records):
        for index, record in enumerate(records):
            prompt = {
                "input": record.input_caption,
                "edit": record.edit_prompt,
                "output": record.output_caption,
            }
            write_caption_folder(
                root,
                index,
                prompt,
                [FolderSample(index, record.input_image, record.edited_image, {})],
            )
        write_seeds_index(root)
        return root

    return write
