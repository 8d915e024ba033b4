"""Training examples: any record source, the official augmentation, deterministic batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from instructedit.data import (
    MAGICBRUSH_COLUMNS,
    EditRecord,
    EditTurn,
    decode_image_cell,
    folder_index,
    load_folder_sample,
    load_magicbrush_turn,
    magicbrush_index,
    parquet_row,
)

__all__ = [
    "DatasetsSource",
    "EditSource",
    "FolderSource",
    "MagicBrushSource",
    "ParquetSource",
    "RecordSource",
    "StepBatches",
    "TrainingExamples",
    "augment_pair",
]


@runtime_checkable
class EditSource(Protocol):
    """Random access to editing examples; ``record(i)`` raises a ``ValueError`` naming a bad row."""

    def __len__(self) -> int: ...

    def record(self, index: int) -> EditRecord:
        """Loads example ``index``."""
        ...


class RecordSource:
    """Examples held in memory."""

    def __init__(self, records: Sequence[EditRecord]) -> None:
        if isinstance(records, EditRecord) or not isinstance(records, Sequence):
            raise TypeError(f"records must be a list of EditRecord, got {type(records).__name__}")
        for index, record in enumerate(records):
            if not isinstance(record, EditRecord):
                raise TypeError(
                    f"records[{index}] must be an EditRecord, got {type(record).__name__}"
                )
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def record(self, index: int) -> EditRecord:
        return self.records[index]


class FolderSource:
    """The official folder layout (lazy: images load when an example is drawn)."""

    def __init__(self, root: str | Path, split: str = "train") -> None:
        self.root = Path(root)
        self.index = folder_index(self.root, split)  # type: ignore[arg-type]
        if not self.index:
            raise ValueError(f"{self.root} holds no samples in split {split!r}")

    def __len__(self) -> int:
        return len(self.index)

    def record(self, index: int) -> EditRecord:
        name, seed = self.index[index]
        return load_folder_sample(self.root, name, seed)


class ParquetSource:
    """A parquet file with diffusers' columns (memory-mapped; rows decode when drawn)."""

    def __init__(
        self,
        path: str | Path,
        *,
        columns: tuple[str, str, str] = ("input_image", "edit_prompt", "edited_image"),
    ) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no such parquet file: {self.path}")
        try:
            self.table = pq.read_table(str(self.path), memory_map=True)
        except (pa.ArrowInvalid, OSError) as error:
            raise ValueError(f"{self.path} is not a readable parquet file ({error})") from error
        missing = [c for c in columns if c not in self.table.column_names]
        if missing:
            raise ValueError(
                f"{self.path}: no column(s) {missing}; columns are {self.table.column_names}"
            )
        self.columns = columns

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def record(self, index: int) -> EditRecord:
        row = self.table.slice(index, 1).to_pylist()[0]
        return parquet_row(row, f"{self.path} row {index}", self.columns)


class MagicBrushSource:
    """MagicBrush's turns as single edits (Zhang et al., NeurIPS 2023): the dev/test folder with
    ``edit_sessions.json``, or one parquet file of the Hugging Face version (lazy: images load
    when an example is drawn).

    Each turn is one example (its input image, instruction and ground-truth output); the order
    of turns is not used in training.

    Args:
        path: the folder or the parquet file.
        masks: ``"ignore"`` (default) trains on the ground truth as stored; ``"local"`` makes
            each target local with the turn's mask (the input's pixels outside the edited region,
            :meth:`~instructedit.data.EditTurn.local_record`), so the editor learns to leave the
            rest of the image as it is. A turn without a mask is used as stored.
    """

    def __init__(self, path: str | Path, *, masks: Literal["ignore", "local"] = "ignore") -> None:
        if masks not in ("ignore", "local"):
            raise ValueError(f"masks must be 'ignore' or 'local', got {masks!r}")
        self.path = Path(path)
        self.masks = masks
        self.parquet = (
            ParquetSource(self.path, columns=MAGICBRUSH_COLUMNS)
            if self.path.suffix == ".parquet"
            else None
        )
        self.index = (
            magicbrush_index(self.path, descriptions="none") if self.parquet is None else []
        )

    def __len__(self) -> int:
        return len(self.index) if self.parquet is None else len(self.parquet)

    def record(self, index: int) -> EditRecord:
        if self.parquet is None:
            turn = load_magicbrush_turn(self.index[index])
            return turn.local_record() if self.masks == "local" else turn.record
        record = self.parquet.record(index)
        if self.masks == "ignore" or "mask_img" not in self.parquet.table.column_names:
            return record
        cell = self.parquet.table.column("mask_img")[index].as_py()
        if cell is None:
            return record
        where = f"{self.path} row {index}: field 'mask_img'"
        mask = decode_image_cell(cell, where, None)
        return EditTurn(f"{self.path.name} row {index}", 1, record, mask).local_record()


class DatasetsSource:
    """A Hugging Face ``datasets.Dataset`` with image columns (diffusers' names by default)."""

    def __init__(
        self,
        dataset: Any,
        *,
        columns: tuple[str, str, str] = ("input_image", "edit_prompt", "edited_image"),
    ) -> None:
        missing = [c for c in columns if c not in dataset.column_names]
        if missing:
            raise ValueError(
                f"dataset has no column(s) {missing}; columns are {dataset.column_names}"
            )
        self.dataset = dataset
        self.columns = columns

    def __len__(self) -> int:
        return len(self.dataset)

    def record(self, index: int) -> EditRecord:
        row = self.dataset[index]
        input_column, edit_column, edited_column = self.columns
        where = f"dataset row {index}"
        instruction = row.get(edit_column)
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(f"{where}: field {edit_column!r} is missing or empty")
        images = []
        for column in (input_column, edited_column):
            value = row.get(column)
            if not isinstance(value, Image.Image):
                raise ValueError(
                    f"{where}: field {column!r} is not an image (got {type(value).__name__})"
                )
            images.append(value.convert("RGB"))
        return EditRecord(input_image=images[0], edit_prompt=instruction, edited_image=images[1])


def augmentation_draw(
    resolution: int, resize: int, flip: bool, generator: torch.Generator
) -> tuple[int, int, bool]:
    """The random part of :func:`augment_pair`: ``(top, left, mirrored)`` of the shared crop and
    flip, drawn from ``generator`` (three draws, whatever the settings)."""
    top = int(torch.randint(0, resize - resolution + 1, (1,), generator=generator))
    left = int(torch.randint(0, resize - resolution + 1, (1,), generator=generator))
    mirrored = flip and bool(torch.rand(1, generator=generator) < 0.5)
    return top, left, mirrored


def augment_pair(
    record: EditRecord, resolution: int, resize: int, flip: bool, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The official augmentation: both images resized to ``resize`` (Lanczos), one shared random
    ``resolution`` crop, one shared horizontal flip with probability 0.5. Returns two
    ``[3, resolution, resolution]`` tensors in [-1, 1] (input, edited)."""
    pixels = []
    for image in (record.input_image, record.edited_image):
        resized = image.convert("RGB").resize((resize, resize), Image.Resampling.LANCZOS)
        pixels.append(
            torch.from_numpy(np.asarray(resized, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)
        )
    top, left, mirrored = augmentation_draw(resolution, resize, flip, generator)
    out = []
    for tensor in pixels:
        crop = tensor[:, top : top + resolution, left : left + resolution]
        out.append(crop.flip(-1) if mirrored else crop)
    return out[0], out[1]


class TrainingExamples(torch.utils.data.Dataset):
    """Turns ``(index, augmentation seed)`` keys into augmented training examples."""

    def __init__(self, source: EditSource, *, resolution: int, resize: int, flip: bool) -> None:
        self.source = source
        self.resolution = resolution
        self.resize = resize
        self.flip = flip

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, seed = key
        record = self.source.record(index)
        generator = torch.Generator().manual_seed(seed)
        source, edited = augment_pair(record, self.resolution, self.resize, self.flip, generator)
        top, left, mirrored = augmentation_draw(
            self.resolution, self.resize, self.flip, torch.Generator().manual_seed(seed)
        )
        if mirrored:  # the crop's left edge in the flipped image
            left = self.resize - left - self.resolution
        width, height = record.input_image.size
        return {
            "input_pixels": source,
            "edited_pixels": edited,
            "edit_prompt": record.edit_prompt,
            # SDXL's micro-conditioning: the size before resizing, and the crop's corner.
            "original_size": torch.tensor([height, width]),
            "crop": torch.tensor([top, left]),
        }


def _mix(*values: int) -> int:
    """A stable 63-bit hash of integers (seeds that do not collide across steps and ranks)."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state ^= (value + 0x9E3779B97F4A7C15 + (state << 6) + (state >> 2)) & 0xFFFFFFFFFFFFFFFF
        state = (state * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    return state & 0x7FFFFFFFFFFFFFFF


class StepBatches(torch.utils.data.Sampler):
    """Yields the keys of each micro-batch, as a pure function of (seed, micro-step, rank).

    Sample position q of the run is example ``perm_e[q mod N]`` of epoch ``e = q // N``, with a
    seeded permutation per epoch; micro-step u of rank p takes positions
    ``[(u·P + p)·B, (u·P + p + 1)·B)``. Starting at any micro-step therefore continues exactly
    where a run stopped.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        *,
        seed: int,
        start: int,
        stop: int,
        rank: int = 0,
        ranks: int = 1,
    ) -> None:
        if size < 1:
            raise ValueError("the training dataset is empty")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.start, self.stop, self.rank, self.ranks = start, stop, rank, ranks
        self._epoch = -1
        self._permutation: list[int] = []

    def __len__(self) -> int:
        return self.stop - self.start

    def _example(self, position: int) -> int:
        epoch = position // self.size
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(_mix(self.seed, epoch, 1))
            self._permutation = torch.randperm(self.size, generator=generator).tolist()
            self._epoch = epoch
        return self._permutation[position % self.size]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for micro in range(self.start, self.stop):
            first = (micro * self.ranks + self.rank) * self.batch_size
            yield [
                (self._example(q), _mix(self.seed, q, 2))
                for q in range(first, first + self.batch_size)
            ]
