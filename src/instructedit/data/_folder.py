"""The official InstructPix2Pix folder layout, written atomically per caption pair.

::

    root/
      0000000/
        prompt.json        {"input": ..., "edit": ..., "output": ...}
        metadata.jsonl     {"seed", "p2p_threshold", "cfg_scale", "clip_sim_0", "clip_sim_1",
                            "clip_sim_dir", "clip_sim_image"} per kept sample
        {seed}_0.jpg       input image (JPEG quality 100)
        {seed}_1.jpg       edited image
      seeds.json           [["0000000", [seed, ...]], ...] sorted by folder name
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from instructedit.checkpoints import publish_dir, write_json_atomic
from instructedit.data._records import EditRecord

__all__ = [
    "SPLITS",
    "FolderSample",
    "folder_index",
    "load_folder_sample",
    "read_folder_dataset",
    "read_json_file",
    "read_jsonl_file",
    "write_caption_folder",
    "write_json_atomic",
    "write_seeds_index",
]

SPLITS = {"train": (0.0, 0.9), "val": (0.9, 0.95), "test": (0.95, 1.0)}
"""The official split of ``seeds.json`` entries, in order."""


@dataclass(frozen=True)
class FolderSample:
    """One kept sample of a caption pair, as written to the folder layout."""

    seed: int
    input_image: Image.Image
    edited_image: Image.Image
    metadata: dict[str, Any]


def write_caption_folder(
    root: str | Path,
    index: int,
    prompt: dict[str, str],
    samples: Sequence[FolderSample],
    *,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Writes one caption pair's folder ``{index:07d}`` atomically and returns it.

    Everything is written into a hidden temporary folder that is renamed into place last, so a
    reader (or a resumed run) sees either the complete folder or none.

    Args:
        root: dataset root.
        index: caption-pair index.
        prompt: ``{"input", "edit", "output"}``.
        samples: the kept samples.
        extra: additional JSON written as ``summary.json`` (e.g. per-reason counts).
    """
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"index must be an int >= 0, got {index!r}")
    if not isinstance(prompt, dict):
        raise TypeError(f"prompt must be a dict with input, edit and output, got {prompt!r}")
    for key in ("input", "edit", "output"):
        if not isinstance(prompt.get(key), str):
            raise ValueError(f"prompt must have a string {key!r}, got {prompt!r}")
    for number, sample in enumerate(samples):
        if not isinstance(sample, FolderSample):
            raise TypeError(
                f"samples[{number}] must be a FolderSample, got {type(sample).__name__}"
            )
        if isinstance(sample.seed, bool) or not isinstance(sample.seed, int) or sample.seed < 0:
            raise ValueError(f"samples[{number}].seed must be an int >= 0, got {sample.seed!r}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{index:07d}"
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        (staging / "prompt.json").write_text(json.dumps(prompt), encoding="utf-8")
        lines = []
        for sample in samples:
            # Quality 100 as the official writer; full-resolution chroma (4:4:4), which PIL would
            # otherwise subsample, costing colour detail at edges.
            sample.input_image.convert("RGB").save(
                staging / f"{sample.seed}_0.jpg", quality=100, subsampling=0
            )
            sample.edited_image.convert("RGB").save(
                staging / f"{sample.seed}_1.jpg", quality=100, subsampling=0
            )
            lines.append(json.dumps({"seed": sample.seed, **sample.metadata}))
        (staging / "metadata.jsonl").write_text(
            "".join(line + "\n" for line in lines), encoding="utf-8"
        )
        if extra is not None:
            (staging / "summary.json").write_text(json.dumps(extra), encoding="utf-8")
        publish_dir(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return final


def read_json_file(path: Path) -> Any:
    """The JSON value stored in ``path``; a file that is not valid UTF-8 JSON raises a
    ``ValueError`` naming it, with the line and column of the error."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})"
        ) from error
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a UTF-8 text file ({error.reason})") from error


def read_jsonl_file(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields ``(line number, object)`` for each non-blank line of a JSONL file, reading one line
    at a time; a line that is not a JSON object raises a ``ValueError`` naming the file and the
    line."""
    with path.open(encoding="utf-8") as file:
        lines = enumerate(file, start=1)
        while True:
            try:
                number, line = next(lines)
            except StopIteration:
                return
            except UnicodeDecodeError as error:
                raise ValueError(f"{path}: not a UTF-8 text file ({error.reason})") from error
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from error
            if not isinstance(row, dict):
                raise ValueError(
                    f"{path}:{number}: expected a JSON object, got {type(row).__name__}"
                )
            yield number, row


def _complete_folders(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.isdigit() and (p / "prompt.json").is_file()
    )


def write_seeds_index(root: str | Path) -> Path:
    """Writes ``seeds.json`` (``[[folder, [seeds…]], …]`` sorted) over every complete folder."""
    root = Path(root)
    entries = []
    for folder in _complete_folders(root):
        seeds = sorted(int(p.name.split("_")[0]) for p in folder.glob("*_0.jpg"))
        if seeds:
            entries.append([folder.name, seeds])
    write_json_atomic(root / "seeds.json", entries)
    return root / "seeds.json"


def _load_image(path: Path, where: str) -> Image.Image:
    if not path.is_file():
        raise ValueError(f"{where}: missing image file {path.name}")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as error:
        raise ValueError(f"{where}: {path.name} is not a readable image ({error})") from error


def read_folder_dataset(
    root: str | Path, split: Literal["train", "val", "test", "all"] = "all"
) -> Iterator[EditRecord]:
    """Reads the official folder layout (generated by instructedit or by the official code).

    Uses ``seeds.json`` when present (the official split by its order), else every complete
    caption folder. Every sample is validated; a problem raises a ``ValueError`` naming the
    folder, the seed and the field.
    """
    for name, seed in folder_index(root, split):
        yield load_folder_sample(root, name, seed)


def folder_index(
    root: str | Path, split: Literal["train", "val", "test", "all"] = "all"
) -> list[tuple[str, int]]:
    """Returns the (folder, seed) of every sample of ``split``, in dataset order."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"no such dataset folder: {root}")
    if not root.is_dir():
        raise ValueError(
            f"{root} is a file, not a dataset folder in the official layout (read a .parquet "
            "file with read_parquet)"
        )
    if split != "all" and split not in SPLITS:
        raise ValueError(f"split must be one of {[*SPLITS, 'all']}, got {split!r}")
    index_file = root / "seeds.json"
    if index_file.is_file():
        entries = _seeds_entries(index_file)
    else:
        folders = _complete_folders(root)
        # Hidden and "_" entries are a generation run's own (temporary files, _skipped).
        others = sorted(p.name for p in root.iterdir() if not p.name.startswith((".", "_")))
        if not folders and others:
            raise ValueError(
                f"{root} is not a dataset in the official folder layout: it holds neither "
                f"seeds.json nor caption folders (0000000/prompt.json, ...), but {others[:5]}"
            )
        entries = [(p.name, sorted(_seed_of(f) for f in p.glob("*_0.jpg"))) for p in folders]
    if split != "all":
        low, high = SPLITS[split]
        entries = entries[int(low * len(entries)) : int(high * len(entries))]
    return [(name, seed) for name, seeds in entries for seed in seeds]


def _seed_of(image: Path) -> int:
    """The seed of an image file ``{seed}_0.jpg``."""
    prefix = image.name.split("_")[0]
    if not prefix.isdigit():
        raise ValueError(f"{image}: expected a file named {{seed}}_0.jpg with an integer seed")
    return int(prefix)


def _seeds_entries(path: Path) -> list[tuple[str, list[int]]]:
    """The ``[[folder, [seed, ...]], ...]`` entries of a ``seeds.json``, checked."""
    value = read_json_file(path)
    if not isinstance(value, list):
        raise ValueError(
            f"{path}: expected a list of [folder, [seed, ...]] entries, got {type(value).__name__}"
        )
    entries = []
    for number, entry in enumerate(value):
        if (
            not isinstance(entry, list)
            or len(entry) != 2
            or not isinstance(entry[0], str)
            or not isinstance(entry[1], list)
            or any(isinstance(s, bool) or not isinstance(s, int) for s in entry[1])
        ):
            raise ValueError(
                f"{path}: entry {number} must be [folder, [seed, ...]] with integer seeds, "
                f"got {entry!r}"
            )
        entries.append((entry[0], list(entry[1])))
    return entries


def load_folder_sample(root: str | Path, name: str, seed: int) -> EditRecord:
    """Loads and validates one sample; problems raise a ``ValueError`` naming folder, seed, field."""
    folder = Path(root) / name
    prompt_file = folder / "prompt.json"
    if not prompt_file.is_file():
        raise ValueError(f"{folder}: missing prompt.json")
    prompt = read_json_file(prompt_file)
    if not isinstance(prompt, dict):
        raise ValueError(
            f"{prompt_file}: expected a JSON object with input, edit and output, got "
            f"{type(prompt).__name__}"
        )
    caption = prompt.get("input", prompt.get("caption"))
    for key, value in (
        ("input (or caption)", caption),
        ("edit", prompt.get("edit")),
        ("output", prompt.get("output")),
    ):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{prompt_file}: field {key!r} is missing or empty")
    metadata: dict[str, Any] = {}
    metadata_file = folder / "metadata.jsonl"
    if metadata_file.is_file():
        for number, row in read_jsonl_file(metadata_file):
            row_seed = row.get("seed")
            if isinstance(row_seed, bool) or not isinstance(row_seed, int):
                raise ValueError(
                    f"{metadata_file}:{number}: field 'seed' must be an integer, got {row_seed!r}"
                )
            if row_seed == int(seed):
                metadata = {k: v for k, v in row.items() if k != "seed"}
    where = f"{folder} seed {seed}"
    return EditRecord(
        input_image=_load_image(folder / f"{seed}_0.jpg", where),
        edit_prompt=prompt["edit"],
        edited_image=_load_image(folder / f"{seed}_1.jpg", where),
        input_caption=caption,
        output_caption=prompt["output"],
        seed=int(seed),
        metadata=metadata,
    )
