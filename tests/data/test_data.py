import json

import datasets
import numpy as np
import pytest
from PIL import Image

from instructedit.data import (
    EditRecord,
    FolderSample,
    folder_to_parquet,
    parquet_to_folder,
    read_folder_dataset,
    read_parquet,
    write_caption_folder,
    write_parquet,
    write_seeds_index,
)


def _image(seed, size=(24, 16)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _records(count=5):
    return [
        EditRecord(
            _image(i),
            f"make it {i}",
            _image(100 + i),
            f"caption {i}",
            f"edited {i}",
            seed=i,
            metadata={"clip_sim_dir": 0.1 * i},
        )
        for i in range(count)
    ]


def test_parquet_loads_with_datasets_using_diffusers_columns(tmp_path):
    records = _records()
    path = write_parquet(records, tmp_path / "train.parquet", rows_per_group=2)
    loaded = datasets.load_dataset("parquet", data_files=str(path), split="train")
    assert {"input_image", "edit_prompt", "edited_image"} <= set(loaded.column_names)
    assert len(loaded) == 5
    row = loaded[3]
    assert row["edit_prompt"] == "make it 3"
    assert isinstance(row["input_image"], Image.Image)
    np.testing.assert_array_equal(
        np.asarray(row["input_image"]), np.asarray(records[3].input_image)
    )
    np.testing.assert_array_equal(
        np.asarray(row["edited_image"]), np.asarray(records[3].edited_image)
    )


def test_parquet_round_trip_is_lossless(tmp_path):
    records = _records()
    back = list(read_parquet(write_parquet(records, tmp_path / "d.parquet")))
    for a, b in zip(records, back, strict=True):
        assert (a.edit_prompt, a.input_caption, a.output_caption, a.seed, a.metadata) == (
            b.edit_prompt,
            b.input_caption,
            b.output_caption,
            b.seed,
            b.metadata,
        )
        np.testing.assert_array_equal(np.asarray(a.edited_image), np.asarray(b.edited_image))


def test_bad_parquet_rows_are_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "bad.parquet"
    image = {"bytes": None, "path": None}
    pq.write_table(
        pa.table({"input_image": [image], "edit_prompt": ["x"], "edited_image": [image]}), path
    )
    with pytest.raises(ValueError, match=r"row 0: field 'input_image' holds no image bytes"):
        list(read_parquet(path))
    pq.write_table(pa.table({"input_image": [1], "edit_prompt": ["x"]}), path)
    with pytest.raises(ValueError, match="no column 'edited_image'"):
        list(read_parquet(path))


def test_folder_layout_round_trip_and_seeds_index(tmp_path):
    prompt = {"input": "a red ball", "edit": "make it blue", "output": "a blue ball"}
    samples = [
        FolderSample(seed, _image(seed), _image(seed + 50), {"cfg_scale": 7.5 + seed})
        for seed in (42, 7)
    ]
    folder = write_caption_folder(tmp_path, 3, prompt, samples)
    assert folder.name == "0000003"
    assert sorted(p.name for p in folder.iterdir()) == [
        "42_0.jpg",
        "42_1.jpg",
        "7_0.jpg",
        "7_1.jpg",
        "metadata.jsonl",
        "prompt.json",
    ]
    write_seeds_index(tmp_path)
    assert json.loads((tmp_path / "seeds.json").read_text()) == [["0000003", [7, 42]]]
    records = list(read_folder_dataset(tmp_path))
    assert [r.seed for r in records] == [7, 42]
    assert records[0].metadata == {"cfg_scale": 14.5}
    assert records[0].input_caption == "a red ball"
    difference = np.abs(
        np.asarray(records[1].input_image, dtype=int)
        - np.asarray(samples[0].input_image, dtype=int)
    )
    assert difference.mean() < 1  # JPEG at quality 100 with 4:4:4 chroma, even on pure noise


def test_folder_validation_names_folder_seed_and_field(tmp_path):
    prompt = {"input": "a", "edit": "b", "output": "c"}
    folder = write_caption_folder(tmp_path, 0, prompt, [FolderSample(1, _image(0), _image(1), {})])
    (folder / "1_1.jpg").unlink()
    with pytest.raises(ValueError, match=r"0000000 seed 1: missing image file 1_1.jpg"):
        list(read_folder_dataset(tmp_path))
    (folder / "prompt.json").write_text(json.dumps({"input": "a", "output": "c"}))
    with pytest.raises(ValueError, match="field 'edit' is missing or empty"):
        list(read_folder_dataset(tmp_path))


def test_splits_follow_the_official_order(tmp_path):
    for index in range(20):
        write_caption_folder(
            tmp_path,
            index,
            {"input": f"c{index}", "edit": "e", "output": "o"},
            [FolderSample(index, _image(index), _image(index), {})],
        )
    write_seeds_index(tmp_path)
    train = [r.input_caption for r in read_folder_dataset(tmp_path, split="train")]
    val = [r.input_caption for r in read_folder_dataset(tmp_path, split="val")]
    test = [r.input_caption for r in read_folder_dataset(tmp_path, split="test")]
    assert (len(train), len(val), len(test)) == (18, 1, 1)
    assert val == ["c18"]
    assert test == ["c19"]


def test_conversions_between_folder_and_parquet(tmp_path):
    prompt = {"input": "a red ball", "edit": "make it blue", "output": "a blue ball"}
    write_caption_folder(
        tmp_path / "f", 0, prompt, [FolderSample(5, _image(5), _image(6), {"p2p_threshold": 0.3})]
    )
    write_seeds_index(tmp_path / "f")
    path = folder_to_parquet(tmp_path / "f", tmp_path / "d.parquet")
    (record,) = read_parquet(path)
    assert (record.edit_prompt, record.seed, record.metadata) == (
        "make it blue",
        5,
        {"p2p_threshold": 0.3},
    )
    parquet_to_folder(path, tmp_path / "g")
    (again,) = read_folder_dataset(tmp_path / "g")
    assert (again.input_caption, again.edit_prompt, again.output_caption, again.seed) == (
        "a red ball",
        "make it blue",
        "a blue ball",
        5,
    )


def test_record_validation():
    with pytest.raises(ValueError, match="edit_prompt"):
        EditRecord(_image(0), " ", _image(1))
    with pytest.raises(TypeError, match="input_image must be a PIL image"):
        EditRecord("x.png", "make it red", _image(1))  # type: ignore[arg-type]
