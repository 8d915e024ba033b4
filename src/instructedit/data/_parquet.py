"""Parquet / Hugging Face ``datasets`` with diffusers' columns, and conversions."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from instructedit._inputs import check_positive_int
from instructedit.data._folder import (
    FolderSample,
    read_folder_dataset,
    write_caption_folder,
    write_seeds_index,
)
from instructedit.data._records import EditRecord

__all__ = [
    "COLUMNS",
    "decode_image_cell",
    "folder_to_parquet",
    "parquet_row",
    "parquet_to_folder",
    "read_parquet",
    "write_parquet",
]

COLUMNS = ("input_image", "edit_prompt", "edited_image")
"""The columns of diffusers' ``train_instruct_pix2pix.py`` (its defaults)."""


def _import_pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as error:
        raise ImportError(
            "parquet datasets need pyarrow: pip install 'instructedit[data]'"
        ) from error
    return pa, pq


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _open_parquet(path: str | Path) -> Any:
    """Opens a parquet file for reading; a missing or unreadable file raises naming it."""
    pa, pq = _import_pyarrow()
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such parquet file: {path}")
    try:
        return pq.ParquetFile(str(path))
    except (pa.ArrowInvalid, OSError) as error:
        raise ValueError(f"{path} is not a readable parquet file ({error})") from error


def write_parquet(
    records: Iterable[EditRecord], path: str | Path, *, rows_per_group: int = 256
) -> Path:
    """Writes records to a parquet file that ``datasets.load_dataset("parquet", …)`` reads with
    image columns (``input_image``, ``edit_prompt``, ``edited_image`` plus captions, seed and
    metadata as JSON). Images are stored losslessly as PNG. The file appears atomically."""
    check_positive_int(rows_per_group, "rows_per_group")
    pa, pq = _import_pyarrow()
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema(
        [
            ("input_image", image_type),
            ("edit_prompt", pa.string()),
            ("edited_image", image_type),
            ("input_caption", pa.string()),
            ("output_caption", pa.string()),
            ("seed", pa.int64()),
            ("metadata", pa.string()),
        ],
        metadata={
            b"huggingface": json.dumps(
                {
                    "info": {
                        "features": {
                            "input_image": {"_type": "Image"},
                            "edit_prompt": {"dtype": "string", "_type": "Value"},
                            "edited_image": {"_type": "Image"},
                            "input_caption": {"dtype": "string", "_type": "Value"},
                            "output_caption": {"dtype": "string", "_type": "Value"},
                            "seed": {"dtype": "int64", "_type": "Value"},
                            "metadata": {"dtype": "string", "_type": "Value"},
                        }
                    }
                }
            ).encode()
        },
    )
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.partial")
    writer = pq.ParquetWriter(str(staging), schema)
    try:
        rows: list[EditRecord] = []

        def flush() -> None:
            if not rows:
                return
            table = pa.table(
                {
                    "input_image": [{"bytes": _png(r.input_image), "path": None} for r in rows],
                    "edit_prompt": [r.edit_prompt for r in rows],
                    "edited_image": [{"bytes": _png(r.edited_image), "path": None} for r in rows],
                    "input_caption": [r.input_caption for r in rows],
                    "output_caption": [r.output_caption for r in rows],
                    "seed": [r.seed for r in rows],
                    "metadata": [json.dumps(r.metadata) for r in rows],
                },
                schema=schema,
            )
            writer.write_table(table)
            rows.clear()

        for number, record in enumerate(records):
            if not isinstance(record, EditRecord):
                raise TypeError(
                    f"records[{number}] must be an EditRecord, got {type(record).__name__}"
                )
            rows.append(record)
            if len(rows) >= rows_per_group:
                flush()
        flush()
    except BaseException:
        writer.close()
        staging.unlink(missing_ok=True)
        raise
    writer.close()
    staging.replace(target)
    return target


def decode_image_cell(value: Any, where: str, mode: str | None = "RGB") -> Image.Image:
    """Decodes a ``datasets`` image cell (``{"bytes", "path"}``) or raw image bytes, converted to
    ``mode`` (``None`` keeps the stored mode); ``where`` names the cell in errors."""
    if value is None:
        raise ValueError(f"{where} is missing")
    data = value.get("bytes") if isinstance(value, dict) else value
    source: Path | io.BytesIO
    if data is None and isinstance(value, dict) and value.get("path"):
        source = Path(value["path"])
        if not source.is_file():
            raise ValueError(f"{where}: no such image file {source}")
        where = f"{where}: {source}"
    elif isinstance(data, (bytes, bytearray)):
        source = io.BytesIO(data)
    else:
        raise ValueError(f"{where} holds no image bytes")
    try:
        with Image.open(source) as image:
            image.load()
            return image.convert(mode) if mode else image.copy()
    except OSError as error:
        raise ValueError(f"{where} is not a readable image ({error})") from error


def parquet_row(
    row: dict[str, Any], where: str, columns: tuple[str, str, str] = COLUMNS
) -> EditRecord:
    """Validates and decodes one parquet row (as a dict) into a record; ``where`` names it."""
    input_column, edit_column, edited_column = columns
    instruction = row.get(edit_column)
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError(f"{where}: field {edit_column!r} is missing or empty")
    metadata: Any = {}
    if isinstance(row.get("metadata"), str):
        try:
            metadata = json.loads(row["metadata"])
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{where}: field 'metadata' is not valid JSON ({error.msg})"
            ) from error
        if not isinstance(metadata, dict):
            raise ValueError(
                f"{where}: field 'metadata' must hold a JSON object, got {type(metadata).__name__}"
            )
    seed = row.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"{where}: field 'seed' must be an integer or null, got {seed!r}")
    for caption in ("input_caption", "output_caption"):
        if row.get(caption) is not None and not isinstance(row[caption], str):
            raise ValueError(
                f"{where}: field {caption!r} must be a string or null, got {row[caption]!r}"
            )
    return EditRecord(
        input_image=decode_image_cell(row.get(input_column), f"{where}: field {input_column!r}"),
        edit_prompt=instruction,
        edited_image=decode_image_cell(row.get(edited_column), f"{where}: field {edited_column!r}"),
        input_caption=row.get("input_caption"),
        output_caption=row.get("output_caption"),
        seed=seed,
        metadata=metadata,
    )


def read_parquet(
    path: str | Path,
    *,
    input_column: str = "input_image",
    edit_column: str = "edit_prompt",
    edited_column: str = "edited_image",
) -> Iterator[EditRecord]:
    """Reads a parquet file (ours, or any with image columns as written by ``datasets``).

    Column names default to diffusers'; a missing column, or a row with a missing image or an
    empty instruction, raises a ``ValueError`` naming the row and the field.
    """
    file = _open_parquet(path)
    names = set(file.schema_arrow.names)
    for column in (input_column, edit_column, edited_column):
        if column not in names:
            raise ValueError(f"{path}: no column {column!r}; columns are {sorted(names)}")
    row_number = 0
    for batch in file.iter_batches():
        table = batch.to_pylist()
        for row in table:
            yield parquet_row(
                row, f"{path} row {row_number}", (input_column, edit_column, edited_column)
            )
            row_number += 1


def folder_to_parquet(root: str | Path, path: str | Path, *, split: str = "all") -> Path:
    """Converts the official folder layout (one split or all) to parquet."""
    return write_parquet(read_folder_dataset(root, split=split), path)  # type: ignore[arg-type]


def parquet_to_folder(path: str | Path, root: str | Path) -> Path:
    """Converts parquet to the folder layout, one caption folder per distinct
    (input caption, instruction, output caption); rows without a seed are numbered."""
    groups: dict[tuple[str, str, str], list[FolderSample]] = {}
    for number, record in enumerate(read_parquet(path)):
        key = (record.input_caption or "", record.edit_prompt, record.output_caption or "")
        seed = record.seed if record.seed is not None else number
        groups.setdefault(key, []).append(
            FolderSample(seed, record.input_image, record.edited_image, record.metadata)
        )
    for index, ((caption, edit, output), samples) in enumerate(groups.items()):
        write_caption_folder(
            root, index, {"input": caption, "edit": edit, "output": output}, samples
        )
    write_seeds_index(root)
    return Path(root)
