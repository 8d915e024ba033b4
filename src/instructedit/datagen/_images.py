"""Real images with captions, the input of a generation run that starts from photographs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

from PIL import Image

from instructedit.captions import CaptionEdit
from instructedit.data._folder import read_jsonl_file

__all__ = ["IMAGE_SUFFIXES", "RealImages", "read_image_captions"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
"""The image files a folder of real images is read for."""

_METADATA = ("metadata.jsonl", "captions.jsonl")


class RealImages(Sequence[Image.Image]):
    """Images read on indexing (a run holds one at a time): files, or parquet image cells."""

    def __init__(self, sources: Sequence[Any], names: Sequence[str]) -> None:
        self._sources = list(sources)
        self.names = list(names)
        """Where each image comes from, for messages and metadata."""

    def __len__(self) -> int:
        return len(self._sources)

    @overload
    def __getitem__(self, index: int) -> Image.Image: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Image.Image]: ...

    def __getitem__(self, index: int | slice) -> Image.Image | Sequence[Image.Image]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        source = self._sources[index]
        if isinstance(source, tuple):  # (parquet table, row): decoded now, not before
            table, row = source
            source = table.column("image")[row].as_py()
        if isinstance(source, Path):
            try:
                with Image.open(source) as image:
                    return image.convert("RGB")
            except OSError as error:
                raise ValueError(f"{source} is not a readable image: {error}") from error
        from instructedit.data import decode_image_cell

        return decode_image_cell(source, self.names[index])


def read_image_captions(
    path: str | Path,
) -> tuple[list[str], RealImages, dict[str, CaptionEdit]]:
    """Reads real images and their captions: ``(captions, images, edits)``.

    ``path`` is one of:

    * a folder of images (:data:`IMAGE_SUFFIXES`), each captioned by a ``.txt`` file of the same
      name beside it, or by a ``metadata.jsonl`` (or ``captions.jsonl``) in the folder whose rows
      hold ``file_name`` and ``caption`` (the layout of ``datasets``' image folders);
    * a JSONL file of ``{"image": path, "caption": text}`` (paths relative to the file);
    * a parquet file with an ``image`` column and a ``caption`` (or ``text``) column.

    A row may also hold ``edit`` and ``output`` (the official caption-edit fields): ``edits``
    maps its caption to that edit, for runs without a caption editor.
    """
    source = Path(path)
    if source.is_dir():
        return _read_folder(source)
    if not source.is_file():
        raise FileNotFoundError(f"images: no such folder or file: {source}")
    if source.suffix == ".jsonl":
        entries = []
        for number, row in read_jsonl_file(source):
            image = row.get("image")
            if not isinstance(image, str) or not image.strip():
                raise ValueError(f"{source}:{number}: field 'image' is missing or empty")
            entries.append((f"{source}:{number}", row, source.parent / image))
        return _read_rows(entries)
    if source.suffix == ".parquet":
        return _read_parquet(source)
    raise ValueError(
        f"images: {source} must be a folder of images, a .jsonl of image paths and captions, "
        "or a .parquet with image and caption columns"
    )


def _read_folder(folder: Path) -> tuple[list[str], RealImages, dict[str, CaptionEdit]]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"images: {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    metadata = next((folder / name for name in _METADATA if (folder / name).is_file()), None)
    if metadata is not None:
        rows = {}
        for number, row in read_jsonl_file(metadata):
            name = row.get("file_name", row.get("image"))
            if not isinstance(name, str):
                raise ValueError(f"{metadata}:{number}: field 'file_name' is missing")
            rows[name] = (f"{metadata}:{number}", row)
        missing = [p.name for p in files if p.name not in rows]
        if missing:
            raise ValueError(f"{metadata} has no row for {missing[:3]}")
        return _read_rows([(*rows[p.name], p) for p in files])
    entries = []
    for file in files:
        caption_file = file.with_suffix(".txt")
        if not caption_file.is_file():
            raise ValueError(
                f"{file} has no caption: write it to {caption_file.name} beside it, or give the "
                f"folder a metadata.jsonl with file_name and caption"
            )
        caption = caption_file.read_text(encoding="utf-8").strip()
        entries.append((str(caption_file), {"caption": caption}, file))
    return _read_rows(entries)


def _read_rows(
    entries: Sequence[tuple[str, dict[str, Any], Any]],
) -> tuple[list[str], RealImages, dict[str, CaptionEdit]]:
    captions: list[str] = []
    sources: list[Any] = []
    names: list[str] = []
    edits: dict[str, CaptionEdit] = {}
    for where, row, image in entries:
        caption = row.get("caption", row.get("input", row.get("text")))
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError(f"{where}: field 'caption' is missing or empty")
        if isinstance(image, Path):
            if not image.is_file():
                raise FileNotFoundError(f"{where}: no such image: {image}")
            names.append(str(image))
        else:
            names.append(where)
        captions.append(caption)
        sources.append(image)
        if "edit" in row or "output" in row:
            edit, output = row.get("edit"), row.get("output")
            if not isinstance(edit, str) or not isinstance(output, str):
                raise ValueError(f"{where}: fields 'edit' and 'output' must both be text")
            edits.setdefault(caption, CaptionEdit(caption, edit, output))
    return captions, RealImages(sources, names), edits


def _read_parquet(path: Path) -> tuple[list[str], RealImages, dict[str, CaptionEdit]]:
    from instructedit.data._parquet import _import_pyarrow

    _, parquet = _import_pyarrow()
    table = parquet.read_table(path)
    columns = set(table.column_names)
    text = next((name for name in ("caption", "text", "input") if name in columns), None)
    if "image" not in columns or text is None:
        raise ValueError(
            f"{path} needs an 'image' column and a 'caption' (or 'text') column, has "
            f"{sorted(columns)}"
        )
    # Captions and edits now; each image's bytes only when the run reaches it.
    rows = table.drop_columns(["image"]).to_pylist()
    entries = [
        (f"{path} row {number}", {**row, "caption": row[text]}, (table, number))
        for number, row in enumerate(rows)
    ]
    return _read_rows(entries)
