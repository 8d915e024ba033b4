import io

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from instructedit.data import parquet_row, read_parquet, write_parquet


def _png():
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def _row(**changes):
    row = {"input_image": _png(), "edit_prompt": "make it blue", "edited_image": _png()}
    row.update(changes)
    return row


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"metadata": '{"cfg_scale": 7.5'}, r"row 3: field 'metadata' is not valid JSON"),
        ({"metadata": "[1, 2]"}, r"row 3: field 'metadata' must hold a JSON object, got list"),
        ({"seed": "42"}, r"row 3: field 'seed' must be an integer or null, got '42'"),
        ({"input_caption": 5}, r"row 3: field 'input_caption' must be a string or null"),
        (
            {"edited_image": {"bytes": None, "path": "/no/such.png"}},
            r"field 'edited_image': no such image file",
        ),
    ],
)
def test_malformed_row_fields_name_the_row_and_field(changes, message):
    with pytest.raises(ValueError, match=message):
        parquet_row(_row(**changes), "data.parquet row 3")


def test_a_missing_or_unreadable_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such parquet file"):
        list(read_parquet(tmp_path / "missing.parquet"))
    path = tmp_path / "notes.parquet"
    path.write_text("not parquet")
    with pytest.raises(ValueError, match=r"notes.parquet is not a readable parquet file"):
        list(read_parquet(path))


def test_writing_checks_records_and_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.parquet"
    with pytest.raises(ValueError, match="rows_per_group must be an int >= 1, got 0"):
        write_parquet([], target, rows_per_group=0)
    with pytest.raises(TypeError, match=r"records\[0\] must be an EditRecord, got dict"):
        write_parquet([_row()], target)
    assert list(tmp_path.iterdir()) == []


def test_no_records_write_an_empty_readable_file(tmp_path):
    path = write_parquet([], tmp_path / "empty.parquet")
    assert pq.read_table(path).num_rows == 0
    assert list(read_parquet(path)) == []
