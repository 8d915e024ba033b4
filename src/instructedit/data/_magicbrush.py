"""MagicBrush (Zhang et al., NeurIPS 2023) sessions, and diffusers' ``metadata.jsonl`` folders.

MagicBrush's dev/test download::

    root/
      edit_sessions.json         {img_id: [{"input", "mask", "instruction", "output"}, ...]}
      local_descriptions.json    {img_id: {"<img_id>-output<n>.png": caption, ...}} (test only)
      global_descriptions.json   {img_id: {"<img_id>-input.png": caption, ...}} (test only)
      images/<img_id>/<img_id>-input.png, <img_id>-mask<n>.png, <img_id>-output<n>.png

Its Hugging Face version (``osunlp/MagicBrush``) is parquet, one row per turn, with the columns
``img_id, turn_index, source_img, mask_img, instruction, target_img``.

diffusers' image folder for ``train_instruct_pix2pix.py``::

    root/
      metadata.jsonl             {"original_image": "<path>", "edit_prompt": "...",
                                  "edited_image": "<path>"} per line
      ...image files, paths relative to root
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from instructedit.data._folder import read_json_file, read_jsonl_file
from instructedit.data._parquet import _open_parquet, decode_image_cell
from instructedit.data._records import EditRecord

__all__ = [
    "MAGICBRUSH_COLUMNS",
    "EditTurn",
    "MagicBrushTurnFiles",
    "SessionRecord",
    "load_magicbrush_turn",
    "magicbrush_index",
    "mask_edit_region",
    "read_magicbrush",
    "read_metadata_jsonl",
]

MAGICBRUSH_COLUMNS = ("source_img", "instruction", "target_img")
"""The (input image, instruction, edited image) columns of MagicBrush's parquet files."""

Descriptions = Literal["local", "global", "none"]

_DESCRIPTION_FILES = {"local": "local_descriptions.json", "global": "global_descriptions.json"}


@dataclass(frozen=True)
class EditTurn:
    """One turn of a multi-turn edit session.

    Attributes:
        session_id: the session (MagicBrush's ``img_id``).
        turn: the turn's number, from 1 (MagicBrush's ``output<n>`` / ``turn_index``).
        record: the input image, the instruction and the ground-truth edited image; the
            captions are the session's descriptions of these images when read.
        mask: the annotator's mask of the edited region as stored (its own mode and values), of
            the input image's size; ``None`` when the data holds none.
    """

    session_id: str
    turn: int
    record: EditRecord
    mask: Image.Image | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.session_id, str) or not self.session_id:
            raise ValueError(f"session_id must be a non-empty string, got {self.session_id!r}")
        if isinstance(self.turn, bool) or not isinstance(self.turn, int) or self.turn < 1:
            raise ValueError(f"turn must be an int >= 1, got {self.turn!r}")
        if not isinstance(self.record, EditRecord):
            raise TypeError(f"record must be an EditRecord, got {type(self.record).__name__}")
        if self.mask is not None:
            if not isinstance(self.mask, Image.Image):
                raise TypeError(f"mask must be a PIL image or None, got {type(self.mask).__name__}")
            if self.mask.size != self.record.input_image.size:
                raise ValueError(
                    f"session {self.session_id} turn {self.turn}: the mask is "
                    f"{_size(self.mask)} but the input image is {_size(self.record.input_image)}"
                )

    def edit_region(self) -> Image.Image | None:
        """Where the turn's edit acts, as an ``"L"`` image (255: edited, 0: kept); ``None``
        without a mask. See :func:`mask_edit_region` for how a stored mask is read."""
        return None if self.mask is None else mask_edit_region(self.mask)

    def local_record(self) -> EditRecord:
        """The turn's record with the ground truth made local: the input's pixels outside
        :meth:`edit_region`, the edited image's inside (the record itself without a mask)."""
        region = self.edit_region()
        if region is None:
            return self.record
        edited = Image.composite(
            self.record.edited_image.convert("RGB"), self.record.input_image.convert("RGB"), region
        )
        return dataclasses.replace(self.record, edited_image=edited)


def mask_edit_region(mask: Image.Image) -> Image.Image:
    """Where an annotator's mask marks the edit, as an ``"L"`` image (255: edited, 0: kept).

    A mask with transparency is read as DALL·E 2's edit masks are (the editor MagicBrush's
    annotators worked with): the transparent pixels (alpha < 128) are the edited region. Any
    other mask is read in diffusers' convention: white (luminance >= 128) is the edited region.
    """
    if not isinstance(mask, Image.Image):
        raise TypeError(f"mask must be a PIL image, got {type(mask).__name__}")
    has_alpha = mask.mode in ("RGBA", "LA", "PA") or (
        mask.mode == "P" and "transparency" in mask.info
    )
    if has_alpha:
        alpha = mask.convert("RGBA").getchannel("A")
        lowest = alpha.getextrema()[0]  # one band: (lowest, highest)
        if isinstance(lowest, int | float) and lowest < 255:  # transparency marks the region
            return alpha.point(lambda value: 255 if value < 128 else 0)
    return mask.convert("L").point(lambda value: 255 if value >= 128 else 0)


@dataclass(frozen=True)
class SessionRecord:
    """The recorded turns of one image's edit session (a benchmark's ground truth), in order:
    turn ``n + 1`` edits turn ``n``'s output.

    Attributes:
        session_id: the session (MagicBrush's ``img_id``).
        turns: turns 1, 2, … of the session.
    """

    session_id: str
    turns: tuple[EditTurn, ...]

    def __post_init__(self) -> None:
        if not self.turns:
            raise ValueError(f"session {self.session_id}: a session holds at least one turn")
        for position, turn in enumerate(self.turns, start=1):
            if not isinstance(turn, EditTurn):
                raise TypeError(f"turns[{position - 1}] must be an EditTurn, got {turn!r}")
            if turn.session_id != self.session_id or turn.turn != position:
                raise ValueError(
                    f"session {self.session_id}: turns[{position - 1}] is session "
                    f"{turn.session_id} turn {turn.turn}; expected turn {position} of this session"
                )


@dataclass(frozen=True)
class MagicBrushTurnFiles:
    """Where one turn of MagicBrush's folder layout lies (checked to exist), before loading.

    Attributes:
        session_id: the session (``img_id``).
        turn: the turn's number, from 1.
        instruction: the edit instruction.
        input: the input image file.
        output: the ground-truth edited image file.
        mask: the mask file, ``None`` when the session lists none.
        input_caption: the description of the input image, when the descriptions file has one.
        output_caption: the description of the edited image, when the descriptions file has one.
    """

    session_id: str
    turn: int
    instruction: str
    input: Path
    output: Path
    mask: Path | None
    input_caption: str | None = None
    output_caption: str | None = None


def _size(image: Image.Image) -> str:
    return f"{image.size[0]}×{image.size[1]}"


def magicbrush_root(path: str | Path) -> Path:
    """The folder holding ``edit_sessions.json`` for ``path`` (that folder or its ``images``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such MagicBrush folder: {path}")
    if path.is_file() and path.name == "edit_sessions.json":
        return path.parent
    for root in (path, path.parent):
        if (root / "edit_sessions.json").is_file() and (path == root or path.name == "images"):
            return root
    raise ValueError(
        f"{path} is not a MagicBrush folder: it holds no edit_sessions.json (read the Hugging "
        "Face version with read_magicbrush on its .parquet file)"
    )


def _descriptions(root: Path, which: Descriptions) -> dict[str, dict[str, str]]:
    """The captions ``{img_id: {file name: caption}}`` of one descriptions file, checked."""
    if which == "none":
        return {}
    if which not in _DESCRIPTION_FILES:
        raise ValueError(f"descriptions must be 'local', 'global' or 'none', got {which!r}")
    path = root / _DESCRIPTION_FILES[which]
    if not path.is_file():
        return {}
    value = read_json_file(path)
    if not isinstance(value, dict) or not all(
        isinstance(captions, dict) and all(isinstance(c, str) for c in captions.values())
        for captions in value.values()
    ):
        raise ValueError(
            f"{path}: expected {{img_id: {{file name: caption}}}} with string captions"
        )
    return {str(key): captions for key, captions in value.items()}


def magicbrush_index(
    path: str | Path, *, descriptions: Descriptions = "local"
) -> list[MagicBrushTurnFiles]:
    """Reads and checks MagicBrush's ``edit_sessions.json`` and returns every turn's files.

    Images are looked up as ``images/<img_id>/<file>``, as MagicBrush's own scripts do. Every
    file is checked to exist; nothing is decoded.

    Args:
        path: the folder holding ``edit_sessions.json`` and ``images/`` (or its ``images``).
        descriptions: which captions fill the records' ``input_caption`` / ``output_caption``:
            ``"local"`` (``local_descriptions.json``, what MagicBrush's CLIP-T compares with),
            ``"global"`` (``global_descriptions.json``) or ``"none"``. A missing file leaves the
            captions ``None``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``edit_sessions.json`` or a descriptions file is malformed (naming the
            file), or a turn's image is missing (naming the session, the turn and the file).
    """
    root = magicbrush_root(path)
    sessions_file = root / "edit_sessions.json"
    sessions = read_json_file(sessions_file)
    if not isinstance(sessions, dict):
        raise ValueError(
            f"{sessions_file}: expected {{img_id: [turn, ...]}}, got {type(sessions).__name__}"
        )
    captions = _descriptions(root, descriptions)
    index = []
    for session_id, turns in sessions.items():
        if not isinstance(turns, list) or not turns:
            raise ValueError(f"{sessions_file}: session {session_id} must be a non-empty list")
        session_captions = captions.get(session_id, {})
        for number, entry in enumerate(turns, start=1):
            where = f"{sessions_file}: session {session_id} turn {number}"
            if not isinstance(entry, dict):
                raise ValueError(f"{where}: expected an object, got {type(entry).__name__}")
            for key in ("input", "instruction", "output"):
                if not isinstance(entry.get(key), str) or not entry[key].strip():
                    raise ValueError(f"{where}: field {key!r} is missing or empty")
            mask_name = entry.get("mask")
            if mask_name is not None and not isinstance(mask_name, str):
                raise ValueError(f"{where}: field 'mask' must be a file name, got {mask_name!r}")
            folder = root / "images" / session_id
            files = {
                key: folder / entry[key]
                for key in ("input", "output", "mask")
                if isinstance(entry.get(key), str) and entry[key]
            }
            for key, file in files.items():
                if not file.is_file():
                    raise ValueError(f"session {session_id} turn {number}: missing {key} {file}")
            index.append(
                MagicBrushTurnFiles(
                    session_id=session_id,
                    turn=number,
                    instruction=entry["instruction"],
                    input=files["input"],
                    output=files["output"],
                    mask=files.get("mask"),
                    input_caption=session_captions.get(entry["input"]),
                    output_caption=session_captions.get(entry["output"]),
                )
            )
    return index


def _open(path: Path, where: str, mode: str | None = "RGB") -> Image.Image:
    """Decodes an image file; ``mode=None`` keeps the stored mode."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert(mode) if mode else image.copy()
    except OSError as error:
        raise ValueError(f"{where} is not a readable image ({error})") from error


def load_magicbrush_turn(files: MagicBrushTurnFiles) -> EditTurn:
    """Loads one turn listed by :func:`magicbrush_index` (images as RGB, the mask as stored)."""
    where = f"session {files.session_id} turn {files.turn}"
    record = EditRecord(
        input_image=_open(files.input, f"{where}: input {files.input}"),
        edit_prompt=files.instruction,
        edited_image=_open(files.output, f"{where}: output {files.output}"),
        input_caption=files.input_caption,
        output_caption=files.output_caption,
    )
    mask = None if files.mask is None else _open(files.mask, f"{where}: mask {files.mask}", None)
    if mask is not None and mask.size != record.input_image.size:
        raise ValueError(
            f"{where}: mask {files.mask} is {_size(mask)} but input {files.input} is "
            f"{_size(record.input_image)}"
        )
    return EditTurn(files.session_id, files.turn, record, mask)


def read_magicbrush(
    path: str | Path, *, descriptions: Descriptions = "local"
) -> Iterator[SessionRecord]:
    """Reads MagicBrush edit sessions, one session at a time, in the data's order.

    ``path`` is the dev/test download (the folder with ``edit_sessions.json`` and ``images/``),
    a parquet file of the Hugging Face version, or a folder of such parquet files (read in name
    order). The whole index is checked before the first session is returned; a session's images
    are decoded when it is reached, so the dataset never has to fit in memory at once.

    Args:
        path: see above.
        descriptions: the captions of the folder layout (see :func:`magicbrush_index`); the
            parquet version holds none.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: malformed metadata, a missing turn image, a mask whose size differs from
            its input image, or parquet turns that are not numbered 1, 2, … (or 0, 1, … in
            files whose smallest ``turn_index`` is 0) per session; the message names the file,
            the session and the turn.
        ImportError: a parquet input without pyarrow installed.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such MagicBrush data: {path}")
    parquet_files = (
        [path] if path.is_file() and path.suffix == ".parquet" else sorted(path.glob("*.parquet"))
    )
    if parquet_files and not (path.is_dir() and (path / "edit_sessions.json").is_file()):
        return _parquet_sessions(parquet_files)
    index = magicbrush_index(path, descriptions=descriptions)
    return _folder_sessions(index)


def _folder_sessions(index: Sequence[MagicBrushTurnFiles]) -> Iterator[SessionRecord]:
    start = 0
    while start < len(index):
        stop = start + 1
        while stop < len(index) and index[stop].session_id == index[start].session_id:
            stop += 1
        turns = tuple(load_magicbrush_turn(files) for files in index[start:stop])
        yield SessionRecord(index[start].session_id, turns)
        start = stop


_PARQUET_COLUMNS = ("img_id", "turn_index", *MAGICBRUSH_COLUMNS)


def _parquet_sessions(files: Sequence[Path]) -> Iterator[SessionRecord]:
    """Groups the rows of MagicBrush parquet files by ``img_id`` (encoded images kept until
    their session is yielded)."""
    sessions: dict[str, list[tuple[int, str, dict[str, Any]]]] = {}
    for file in files:
        opened = _open_parquet(file)
        names = set(opened.schema_arrow.names)
        missing = [column for column in _PARQUET_COLUMNS if column not in names]
        if missing:
            raise ValueError(
                f"{file}: not MagicBrush's parquet layout, no column(s) {missing}; columns are "
                f"{sorted(names)}"
            )
        columns = [*_PARQUET_COLUMNS, *(["mask_img"] if "mask_img" in names else [])]
        row_number = 0
        for batch in opened.iter_batches(columns=columns):
            for row in batch.to_pylist():
                where = f"{file} row {row_number}"
                turn = row["turn_index"]
                if isinstance(turn, bool) or not isinstance(turn, int):
                    raise ValueError(
                        f"{where}: field 'turn_index' must be an integer, got {turn!r}"
                    )
                if row["img_id"] is None or str(row["img_id"]) == "":
                    raise ValueError(f"{where}: field 'img_id' is missing")
                sessions.setdefault(str(row["img_id"]), []).append((turn, where, row))
                row_number += 1
    return _decode_parquet_sessions(sessions)


def _decode_parquet_sessions(
    sessions: dict[str, list[tuple[int, str, dict[str, Any]]]],
) -> Iterator[SessionRecord]:
    # The first turn's index (1 in MagicBrush's files) is the smallest index of all sessions.
    first = min((turn for rows in sessions.values() for turn, _, _ in rows), default=1)
    for session_id, rows in sessions.items():
        rows.sort(key=lambda item: item[0])
        numbers = [turn for turn, _, _ in rows]
        if numbers != list(range(first, first + len(numbers))):
            raise ValueError(
                f"session {session_id}: turn_index values {numbers} are not {first}, "
                f"{first + 1}, …; a multi-turn session needs every turn"
            )
        turns = []
        for position, (_, where, row) in enumerate(rows, start=1):
            instruction = row.get("instruction")
            if not isinstance(instruction, str) or not instruction.strip():
                raise ValueError(f"{where}: field 'instruction' is missing or empty")
            images = {
                column: decode_image_cell(row.get(column), f"{where}: field {column!r}", mode)
                for column, mode in (("source_img", "RGB"), ("target_img", "RGB"))
            }
            mask = None
            if row.get("mask_img") is not None:
                mask = decode_image_cell(row["mask_img"], f"{where}: field 'mask_img'", None)
                if mask.size != images["source_img"].size:
                    raise ValueError(
                        f"{where}: field 'mask_img' is {_size(mask)} but 'source_img' is "
                        f"{_size(images['source_img'])}"
                    )
            record = EditRecord(images["source_img"], instruction, images["target_img"])
            turns.append(EditTurn(session_id, position, record, mask))
        yield SessionRecord(session_id, tuple(turns))


_INPUT_KEYS = ("original_image", "input_image", "file_name")


def read_metadata_jsonl(
    path: str | Path,
    *,
    input_key: str | None = None,
    edit_key: str = "edit_prompt",
    edited_key: str = "edited_image",
) -> Iterator[EditRecord]:
    """Reads an image folder described by a ``metadata.jsonl``, as used to fine-tune with
    diffusers' ``train_instruct_pix2pix.py --train_data_dir``.

    Each line names the input image, the instruction and the edited image; image paths are
    relative to the folder of ``metadata.jsonl``. Keys other than these three are kept in the
    record's ``metadata`` (``input_caption`` and ``output_caption`` become its captions).

    Args:
        path: the folder holding ``metadata.jsonl``, or the file itself.
        input_key: the key of the input image's path; ``None`` takes the first of
            ``original_image``, ``input_image`` and ``file_name`` that a line holds.
        edit_key: the key of the instruction (diffusers' default ``edit_prompt``).
        edited_key: the key of the edited image's path (diffusers' default ``edited_image``).

    Raises:
        FileNotFoundError: no such folder or file.
        ValueError: a line that is not a JSON object, lacks a key, or names a missing or
            unreadable image; the message names the file and the line.
    """
    path = Path(path)
    file = path / "metadata.jsonl" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no such metadata.jsonl: {file}")
    return _metadata_records(file, input_key, edit_key, edited_key)


def _metadata_records(
    file: Path, input_key: str | None, edit_key: str, edited_key: str
) -> Iterator[EditRecord]:
    for number, row in read_jsonl_file(file):
        where = f"{file}:{number}"
        key = input_key or next((k for k in _INPUT_KEYS if k in row), _INPUT_KEYS[0])
        paths = {}
        for name in (key, edited_key):
            value = row.get(name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{where}: field {name!r} (an image path) is missing or empty")
            image_file = file.parent / value
            if not image_file.is_file():
                raise ValueError(f"{where}: field {name!r} names a missing file {image_file}")
            paths[name] = image_file
        instruction = row.get(edit_key)
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(f"{where}: field {edit_key!r} is missing or empty")
        captions = {c: row.get(c) for c in ("input_caption", "output_caption")}
        for name, caption in captions.items():
            if caption is not None and not isinstance(caption, str):
                raise ValueError(f"{where}: field {name!r} must be a string, got {caption!r}")
        used = {key, edited_key, edit_key, *captions}
        yield EditRecord(
            input_image=_open(paths[key], f"{where}: {paths[key]}"),
            edit_prompt=instruction,
            edited_image=_open(paths[edited_key], f"{where}: {paths[edited_key]}"),
            input_caption=captions["input_caption"],
            output_caption=captions["output_caption"],
            metadata={k: v for k, v in row.items() if k not in used},
        )
