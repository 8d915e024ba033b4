"""Real images with captions, the input of a generation run that starts from photographs."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, overload

from PIL import Image

from instructedit.captions import CaptionEdit
from instructedit.data._folder import read_jsonl_file

__all__ = ["IMAGE_SUFFIXES", "ImageCaptioner", "RealImages", "read_image_captions"]

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
        return _load(self._sources[index], self.names[index])


def _load(source: Any, name: str) -> Image.Image:
    """One image: a file, a parquet ``(table, row)`` (decoded now, not before) or an image
    cell."""
    if isinstance(source, tuple):
        table, row = source
        if hasattr(table, "features"):  # a datasets split: its Image feature decodes
            source = table.select_columns(["image"])[row]["image"]
            if isinstance(source, Image.Image):
                return source.convert("RGB")
        else:
            source = table.column("image")[row].as_py()
    if isinstance(source, Path):
        try:
            with Image.open(source) as image:
                return image.convert("RGB")
        except OSError as error:
            raise ValueError(f"{source} is not a readable image: {error}") from error
    from instructedit.data import decode_image_cell

    return decode_image_cell(source, name)


class ImageCaptioner:
    """Captions images with a transformers image-to-text model (BLIP, GIT, a
    ``VisionEncoderDecoderModel``, ...), greedily.

    Args:
        model: a model folder or hub id holding the model, its image processor and tokenizer.
        max_new_tokens: the longest caption, in tokens.
        device: where the model runs (default: a GPU when there is one).
    """

    def __init__(
        self, model: str | Path, *, max_new_tokens: int = 30, device: str | None = None
    ) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.processor = AutoImageProcessor.from_pretrained(str(model))
        self.tokenizer = AutoTokenizer.from_pretrained(str(model))
        self.model = AutoModelForImageTextToText.from_pretrained(str(model)).to(self.device).eval()
        self.max_new_tokens = max_new_tokens

    def __call__(self, image: Image.Image) -> str:
        """The caption of ``image``."""
        import torch

        pixels = self.processor(images=[image.convert("RGB")], return_tensors="pt").pixel_values
        with torch.no_grad():
            tokens = self.model.generate(
                pixel_values=pixels.to(self.device, self.model.dtype),
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
            )
        text: str = self.tokenizer.batch_decode(tokens, skip_special_tokens=True)[0]
        return " ".join(text.split())


def read_image_captions(
    path: str | Path | Any,
    *,
    captioner: Callable[[Image.Image], str] | None = None,
) -> tuple[list[str], RealImages, dict[str, CaptionEdit]]:
    """Reads real images and their captions: ``(captions, images, edits)``.

    ``path`` is one of:

    * a folder of images (:data:`IMAGE_SUFFIXES`), each captioned by a ``.txt`` file of the same
      name beside it, or by a ``metadata.jsonl`` (or ``captions.jsonl``) in the folder whose rows
      hold ``file_name`` and ``caption`` (the layout of ``datasets``' image folders);
    * a JSONL file of ``{"image": path, "caption": text}`` (paths relative to the file);
    * a parquet file with an ``image`` column and a ``caption`` (or ``text``) column;
    * a ``datasets`` split with those columns: a ``datasets.Dataset``, or the folder
      ``Dataset.save_to_disk`` writes (a ``DatasetDict``'s split is its subfolder).

    A row may also hold ``edit`` and ``output`` (the official caption-edit fields): ``edits``
    maps its caption to that edit, for runs without a caption editor.

    With ``captioner`` (e.g. an :class:`ImageCaptioner`), images without a caption are
    captioned by it: a folder may then hold images alone, and rows may lack ``caption``.
    """
    datasets = sys.modules.get("datasets")  # a datasets object implies the module is loaded
    if datasets is not None and not isinstance(path, (str, os.PathLike)):
        if isinstance(path, (datasets.DatasetDict, datasets.IterableDatasetDict)):
            raise ValueError(
                f"images: pass one split of the {type(path).__name__}, e.g. "
                f"dataset[{sorted(path)[0]!r}], got all of {sorted(path)}"
            )
        if isinstance(path, datasets.IterableDataset):
            raise ValueError(
                "images: a streamed IterableDataset cannot be indexed; load it without "
                "streaming=True, or save it with save_to_disk and pass the folder"
            )
        if isinstance(path, datasets.Dataset):
            return _read_table(path, "the dataset", captioner)
    source = Path(path)
    if source.is_dir() and any((source / n).is_file() for n in ("state.json", "dataset_dict.json")):
        from datasets import Dataset, load_from_disk

        split = load_from_disk(str(source))
        if not isinstance(split, Dataset):
            raise ValueError(
                f"images: {source} holds the splits {sorted(split)}; pass one split's folder, "
                f"e.g. {source / sorted(split)[0]}"
            )
        return _read_table(split, str(source), captioner)
    if source.is_dir():
        return _read_folder(source, captioner)
    if not source.is_file():
        raise FileNotFoundError(f"images: no such folder or file: {source}")
    if source.suffix == ".jsonl":
        entries = []
        for number, row in read_jsonl_file(source):
            image = row.get("image")
            if not isinstance(image, str) or not image.strip():
                raise ValueError(f"{source}:{number}: field 'image' is missing or empty")
            entries.append((f"{source}:{number}", row, source.parent / image))
        return _read_rows(entries, captioner)
    if source.suffix == ".parquet":
        return _read_parquet(source, captioner)
    raise ValueError(
        f"images: {source} must be a folder of images, a .jsonl of image paths and captions, "
        "or a .parquet with image and caption columns"
    )


def _read_folder(
    folder: Path, captioner: Callable[[Image.Image], str] | None
) -> tuple[list[str], RealImages, dict[str, CaptionEdit]]:
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
        return _read_rows([(*rows[p.name], p) for p in files], captioner)
    entries: list[tuple[str, dict[str, Any], Any]] = []
    for file in files:
        caption_file = file.with_suffix(".txt")
        if caption_file.is_file():
            caption = caption_file.read_text(encoding="utf-8").strip()
            entries.append((str(caption_file), {"caption": caption}, file))
        elif captioner is not None:
            entries.append((str(file), {}, file))
        else:
            raise ValueError(
                f"{file} has no caption: write it to {caption_file.name} beside it, give the "
                f"folder a metadata.jsonl with file_name and caption, or pass a captioner"
            )
    return _read_rows(entries, captioner)


def _read_rows(
    entries: Sequence[tuple[str, dict[str, Any], Any]],
    captioner: Callable[[Image.Image], str] | None = None,
) -> tuple[list[str], RealImages, dict[str, CaptionEdit]]:
    captions: list[str] = []
    sources: list[Any] = []
    names: list[str] = []
    edits: dict[str, CaptionEdit] = {}
    for where, row, image in entries:
        caption = row.get("caption", row.get("input", row.get("text")))
        if caption is None and captioner is not None:
            caption = captioner(_load(image, where))
            if not caption.strip():
                raise ValueError(f"{where}: the captioner wrote an empty caption")
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


def _read_parquet(
    path: Path, captioner: Callable[[Image.Image], str] | None
) -> tuple[list[str], RealImages, dict[str, CaptionEdit]]:
    from instructedit.data._parquet import _import_pyarrow

    _, parquet = _import_pyarrow()
    return _read_table(parquet.read_table(path), str(path), captioner)


def _read_table(
    table: Any, path: str, captioner: Callable[[Image.Image], str] | None
) -> tuple[list[str], RealImages, dict[str, CaptionEdit]]:
    """A pyarrow table or a ``datasets`` split of images and captions."""
    columns = set(table.column_names)
    text = next((name for name in ("caption", "text", "input") if name in columns), None)
    if "image" not in columns or (text is None and captioner is None):
        raise ValueError(
            f"{path} needs an 'image' column and a 'caption' (or 'text') column, has "
            f"{sorted(columns)}"
        )
    # Captions and edits now; each image's bytes only when the run reaches it.
    without = table.drop_columns(["image"]) if hasattr(table, "drop_columns") else None
    rows = without.to_pylist() if without is not None else table.remove_columns("image").to_list()
    entries: list[tuple[str, dict[str, Any], Any]] = [
        (f"{path} row {number}", {**row, "caption": row[text]} if text else row, (table, number))
        for number, row in enumerate(rows)
    ]
    return _read_rows(entries, captioner)
