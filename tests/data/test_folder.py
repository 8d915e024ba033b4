import numpy as np
import pytest
from PIL import Image

from instructedit.data import (
    FolderSample,
    folder_index,
    read_folder_dataset,
    write_caption_folder,
    write_seeds_index,
)


def _dataset(root):
    image = Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8))
    folder = write_caption_folder(
        root,
        0,
        {"input": "a red ball", "edit": "make it blue", "output": "a blue ball"},
        [FolderSample(7, image, image, {"cfg_scale": 7.5})],
    )
    write_seeds_index(root)
    return folder


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "prompt.json",
            '{"input": "a", "edit": ',
            r"0000000/prompt.json: not valid JSON \(.* line 1",
        ),
        ("prompt.json", '["a", "b", "c"]', r"prompt.json: expected a JSON object .*, got list"),
        (
            "metadata.jsonl",
            '{"seed": 7}\n{"seed": 8,\n',
            r"0000000/metadata.jsonl:2: not valid JSON",
        ),
        ("metadata.jsonl", "[7]\n", r"metadata.jsonl:1: expected a JSON object, got list"),
        ("metadata.jsonl", '{"seed": "x"}\n', r"metadata.jsonl:1: field 'seed' must be an integer"),
    ],
)
def test_malformed_json_in_a_caption_folder_names_the_file(tmp_path, name, text, message):
    folder = _dataset(tmp_path)
    (folder / name).write_text(text)
    with pytest.raises(ValueError, match=message):
        list(read_folder_dataset(tmp_path))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[["0000000", [7]]', r"seeds.json: not valid JSON \(.* line 1"),
        ('{"0000000": [7]}', r"seeds.json: expected a list of \[folder, \[seed, ...\]\] entries"),
        ('[["0000000", 7]]', r"seeds.json: entry 0 must be \[folder, \[seed, ...\]\]"),
        ('[["0000000", ["7"]]]', r"seeds.json: entry 0 must be .* integer seeds"),
    ],
)
def test_malformed_seeds_index_names_the_file(tmp_path, text, message):
    _dataset(tmp_path)
    (tmp_path / "seeds.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        folder_index(tmp_path)


def test_a_folder_of_another_layout_is_refused(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "train.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match="not a dataset in the official folder layout"):
        folder_index(tmp_path)
    with pytest.raises(ValueError, match="is a file, not a dataset folder"):
        folder_index(tmp_path / "train.parquet")
    with pytest.raises(FileNotFoundError, match="no such dataset folder"):
        folder_index(tmp_path / "missing")
    # An empty folder, or one holding only a generation run's own entries, is an empty dataset.
    (tmp_path / "empty" / "_skipped").mkdir(parents=True)
    assert folder_index(tmp_path / "empty") == []


def test_unknown_split_is_refused_before_reading(tmp_path):
    _dataset(tmp_path)
    (tmp_path / "seeds.json").write_text("not json")
    with pytest.raises(ValueError, match="split must be one of"):
        folder_index(tmp_path, split="validation")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("index", "prompt", "samples", "error", "message"),
    [
        (-1, None, [], ValueError, "index must be an int >= 0, got -1"),
        (True, None, [], ValueError, "index must be an int >= 0, got True"),
        (0, "a red ball", [], TypeError, "prompt must be a dict"),
        (0, None, ["7_0.jpg"], TypeError, r"samples\[0\] must be a FolderSample"),
        (0, None, [FolderSample(-3, None, None, {})], ValueError, r"samples\[0\].seed must be"),
    ],
)
def test_writing_a_caption_folder_checks_its_arguments(
    tmp_path, index, prompt, samples, error, message
):
    prompt = prompt if prompt is not None else {"input": "a", "edit": "b", "output": "c"}
    with pytest.raises(error, match=message):
        write_caption_folder(tmp_path, index, prompt, samples)
    assert list(tmp_path.iterdir()) == []
