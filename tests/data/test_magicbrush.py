import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from instructedit.data import (
    EditRecord,
    EditTurn,
    SessionRecord,
    magicbrush_index,
    mask_edit_region,
    read_magicbrush,
    read_metadata_jsonl,
)
from instructedit.training import MagicBrushSource

SESSIONS = {"101": ["make it red", "add a hat"], "202": ["remove the dog", "make it night"]}


def _image(seed, size=(16, 16)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _mask(size=(16, 16)):
    mask = Image.new("L", size, 0)
    mask.paste(255, (4, 4, 12, 12))
    return mask


def write_magicbrush_folder(root):
    """MagicBrush's dev/test layout: 2 sessions × 2 turns of 16×16 PNGs."""
    sessions, local = {}, {}
    for index, (session_id, instructions) in enumerate(SESSIONS.items()):
        folder = root / "images" / session_id
        folder.mkdir(parents=True)
        _image(10 * index).save(folder / f"{session_id}-input.png")
        entries = []
        for turn, instruction in enumerate(instructions, start=1):
            _image(10 * index + turn).save(folder / f"{session_id}-output{turn}.png")
            _mask().save(folder / f"{session_id}-mask{turn}.png")
            entries.append(
                {
                    "input": f"{session_id}-input.png" if turn == 1 else entries[-1]["output"],
                    "mask": f"{session_id}-mask{turn}.png",
                    "instruction": instruction,
                    "output": f"{session_id}-output{turn}.png",
                }
            )
        sessions[session_id] = entries
        local[session_id] = {e["output"]: f"{e['instruction']} done" for e in entries}
    (root / "edit_sessions.json").write_text(json.dumps(sessions))
    (root / "local_descriptions.json").write_text(json.dumps(local))
    return root


def _pixels(image):
    return np.asarray(image.convert("RGB"))


def _cell(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def write_magicbrush_parquet(path, *, turn_offset=0, skip=None):
    """The Hugging Face layout, rows deliberately out of turn order."""
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema(
        [
            ("img_id", pa.string()),
            ("turn_index", pa.int32()),
            ("source_img", image_type),
            ("mask_img", image_type),
            ("instruction", pa.string()),
            ("target_img", image_type),
        ]
    )
    rows = []
    for index, (session_id, instructions) in enumerate(SESSIONS.items()):
        for turn, instruction in reversed(list(enumerate(instructions, start=1))):
            if (session_id, turn) == skip:
                continue
            source = _image(10 * index) if turn == 1 else _image(10 * index + turn - 1)
            rows.append(
                {
                    "img_id": session_id,
                    "turn_index": turn + turn_offset,
                    "source_img": _cell(source),
                    "mask_img": _cell(_mask()),
                    "instruction": instruction,
                    "target_img": _cell(_image(10 * index + turn)),
                }
            )
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def _check_sessions(sessions, *, captions):
    assert [s.session_id for s in sessions] == ["101", "202"]
    for index, session in enumerate(sessions):
        assert isinstance(session, SessionRecord)
        assert [t.turn for t in session.turns] == [1, 2]
        assert [t.record.edit_prompt for t in session.turns] == SESSIONS[session.session_id]
        first, second = session.turns
        assert np.array_equal(_pixels(first.record.input_image), _pixels(_image(10 * index)))
        # Turn 2 edits turn 1's ground-truth output.
        assert np.array_equal(
            _pixels(second.record.input_image), _pixels(first.record.edited_image)
        )
        assert np.array_equal(_pixels(second.record.edited_image), _pixels(_image(10 * index + 2)))
        for turn in session.turns:
            assert turn.mask is not None
            assert turn.mask.mode == "L"  # kept as stored
            assert np.array_equal(np.asarray(turn.mask), np.asarray(_mask()))
            expected = f"{turn.record.edit_prompt} done" if captions else None
            assert turn.record.output_caption == expected


def test_folder_layout_reads_sessions_turns_masks_and_captions(tmp_path):
    root = write_magicbrush_folder(tmp_path / "test")
    _check_sessions(list(read_magicbrush(root)), captions=True)
    # The images folder (as MagicBrush's scripts take it) and no captions.
    _check_sessions(list(read_magicbrush(root / "images", descriptions="none")), captions=False)
    index = magicbrush_index(root)
    assert [(f.session_id, f.turn) for f in index] == [
        ("101", 1),
        ("101", 2),
        ("202", 1),
        ("202", 2),
    ]
    assert index[1].input.name == "101-output1.png"


def test_parquet_layout_reads_the_same_sessions(tmp_path):
    path = write_magicbrush_parquet(tmp_path / "dev.parquet")
    _check_sessions(list(read_magicbrush(path)), captions=False)
    # A folder of parquet shards, as the Hugging Face dataset stores them.
    _check_sessions(list(read_magicbrush(tmp_path)), captions=False)


def test_parquet_turns_must_be_consecutive(tmp_path):
    path = write_magicbrush_parquet(tmp_path / "dev.parquet", skip=("202", 1))
    sessions = read_magicbrush(path)
    assert next(sessions).session_id == "101"
    with pytest.raises(ValueError, match=r"session 202: turn_index values \[2\] are not 1, 2"):
        next(sessions)
    # Zero-based turn indices read the same sessions.
    path = write_magicbrush_parquet(tmp_path / "zero.parquet", turn_offset=-1)
    _check_sessions(list(read_magicbrush(path)), captions=False)


def test_parquet_without_magicbrush_columns_is_refused(tmp_path):
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"edit_prompt": ["x"]}), path)
    with pytest.raises(ValueError, match=r"other.parquet: not MagicBrush's parquet layout"):
        read_magicbrush(path)


def test_metadata_jsonl_reads_into_the_same_records(tmp_path):
    root = write_magicbrush_folder(tmp_path / "mb")
    folder = tmp_path / "finetune"
    (folder / "original").mkdir(parents=True)
    (folder / "edited").mkdir()
    lines = []
    for number, turn in enumerate(t for s in read_magicbrush(root) for t in s.turns):
        turn.record.input_image.save(folder / "original" / f"{number}.png")
        turn.record.edited_image.save(folder / "edited" / f"{number}.png")
        lines.append(
            {
                "original_image": f"original/{number}.png",
                "edit_prompt": turn.record.edit_prompt,
                "edited_image": f"edited/{number}.png",
                "session": turn.session_id,
            }
        )
    (folder / "metadata.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    records = list(read_metadata_jsonl(folder))
    turns = [t for s in read_magicbrush(root) for t in s.turns]
    assert len(records) == 4
    for record, turn in zip(records, turns, strict=True):
        assert isinstance(record, EditRecord)
        assert record.edit_prompt == turn.record.edit_prompt
        assert np.array_equal(_pixels(record.input_image), _pixels(turn.record.input_image))
        assert np.array_equal(_pixels(record.edited_image), _pixels(turn.record.edited_image))
        assert record.metadata == {"session": turn.session_id}
    # imagefolder's own key names the input image when original_image is absent.
    (folder / "metadata.jsonl").write_text(
        json.dumps(
            {"file_name": "original/0.png", "edit_prompt": "x", "edited_image": "edited/0.png"}
        )
    )
    assert len(list(read_metadata_jsonl(folder / "metadata.jsonl"))) == 1


def test_metadata_jsonl_errors_name_the_line(tmp_path):
    _image(0).save(tmp_path / "a.png")
    line = {"original_image": "a.png", "edit_prompt": "x", "edited_image": "missing.png"}
    (tmp_path / "metadata.jsonl").write_text("\n" + json.dumps(line) + "\n")
    with pytest.raises(ValueError, match=r"metadata.jsonl:2: field 'edited_image' names a missing"):
        list(read_metadata_jsonl(tmp_path))
    (tmp_path / "metadata.jsonl").write_text(
        json.dumps({**line, "edited_image": "a.png", "edit_prompt": ""})
    )
    with pytest.raises(ValueError, match=r"metadata.jsonl:1: field 'edit_prompt' is missing"):
        list(read_metadata_jsonl(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"no such metadata\.jsonl"):
        read_metadata_jsonl(tmp_path / "nowhere")


def test_missing_folder_and_malformed_sessions_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such MagicBrush data"):
        read_magicbrush(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"holds no edit_sessions\.json"):
        read_magicbrush(tmp_path / "empty")
    root = write_magicbrush_folder(tmp_path / "mb")
    (root / "edit_sessions.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"edit_sessions.json: not valid JSON"):
        read_magicbrush(root)
    (root / "edit_sessions.json").write_text(json.dumps({"101": [{"input": "101-input.png"}]}))
    with pytest.raises(
        ValueError, match=r"edit_sessions.json: session 101 turn 1: field 'instruction'"
    ):
        read_magicbrush(root)
    (root / "edit_sessions.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match=r"expected \{img_id: \[turn, \.\.\.\]\}, got list"):
        read_magicbrush(root)


def test_missing_turn_image_names_session_turn_and_file(tmp_path):
    root = write_magicbrush_folder(tmp_path / "mb")
    (root / "images" / "202" / "202-output2.png").unlink()
    # Refused before any session is returned.
    with pytest.raises(ValueError, match=r"session 202 turn 2: missing output .*202-output2.png"):
        read_magicbrush(root)


def test_mask_of_another_size_is_refused(tmp_path):
    root = write_magicbrush_folder(tmp_path / "mb")
    _mask((8, 8)).save(root / "images" / "101" / "101-mask2.png")
    sessions = read_magicbrush(root)
    with pytest.raises(
        ValueError, match=r"session 101 turn 2: mask .*101-mask2.png is 8×8 but input"
    ):
        next(sessions)
    record = EditRecord(_image(0), "x", _image(1))
    with pytest.raises(ValueError, match="the mask is 8×8 but the input image is 16×16"):
        EditTurn("1", 1, record, _mask((8, 8)))


def test_session_turns_are_numbered_in_order():
    record = EditRecord(_image(0), "x", _image(1))
    with pytest.raises(ValueError, match=r"turns\[0\] is session 1 turn 2; expected turn 1"):
        SessionRecord("1", (EditTurn("1", 2, record),))
    with pytest.raises(ValueError, match="turn must be an int >= 1"):
        EditTurn("1", 0, record)


def test_training_source_serves_every_turn(tmp_path):
    root = write_magicbrush_folder(tmp_path / "mb")
    turns = [t for s in read_magicbrush(root) for t in s.turns]
    for source in (
        MagicBrushSource(root),
        MagicBrushSource(write_magicbrush_parquet(tmp_path / "dev.parquet")),
    ):
        assert len(source) == 4
        records = [source.record(i) for i in range(len(source))]
        assert sorted(r.edit_prompt for r in records) == sorted(t.record.edit_prompt for t in turns)
        by_prompt = {t.record.edit_prompt: t.record for t in turns}
        for record in records:
            expected = by_prompt[record.edit_prompt]
            assert np.array_equal(_pixels(record.edited_image), _pixels(expected.edited_image))


def test_a_masked_source_trains_on_local_targets(tmp_path):
    """masks="local": outside the mask the target is the input, inside it the stored target."""
    root = write_magicbrush_folder(tmp_path / "mb")
    inside = np.zeros((16, 16), bool)
    inside[4:12, 4:12] = True
    for source in (
        MagicBrushSource(root, masks="local"),
        MagicBrushSource(write_magicbrush_parquet(tmp_path / "dev.parquet"), masks="local"),
    ):
        stored = MagicBrushSource(source.path)
        for index in range(len(source)):
            record, plain = source.record(index), stored.record(index)
            target, given = _pixels(record.edited_image), _pixels(plain.edited_image)
            assert np.array_equal(target[inside], given[inside])
            assert np.array_equal(target[~inside], _pixels(plain.input_image)[~inside])
            assert not np.array_equal(given[~inside], _pixels(plain.input_image)[~inside])
    with pytest.raises(ValueError, match="masks must be 'ignore' or 'local', got 'use'"):
        MagicBrushSource(root, masks="use")


def test_mask_edit_region_reads_both_conventions():
    white = _mask()  # white: edited (diffusers' convention)
    transparent = Image.new("RGBA", (16, 16), (0, 0, 0, 255))  # DALL·E 2's: transparent is edited
    transparent.paste((0, 0, 0, 0), (4, 4, 12, 12))
    expected = np.asarray(white) > 0
    for mask in (white, white.convert("RGB"), transparent):
        assert np.array_equal(np.asarray(mask_edit_region(mask)) > 0, expected)
    opaque = Image.new("RGBA", (16, 16), (0, 0, 0, 255))
    opaque.paste((255, 255, 255, 255), (4, 4, 12, 12))  # no transparency: white marks the edit
    assert np.array_equal(np.asarray(mask_edit_region(opaque)) > 0, expected)
    record = EditRecord(_image(0), "x", _image(1))
    assert EditTurn("1", 1, record).local_record() is record  # no mask: as stored
