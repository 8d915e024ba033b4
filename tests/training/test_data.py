import numpy as np
import pytest
from PIL import Image

from instructedit.data import EditRecord
from instructedit.training import FolderSource, ParquetSource, RecordSource


def _record():
    image = Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8))
    return EditRecord(image, "make it blue", image)


@pytest.mark.parametrize(
    ("records", "message"),
    [
        (_record(), "records must be a list of EditRecord, got EditRecord"),
        ([_record(), {"edit_prompt": "x"}], r"records\[1\] must be an EditRecord, got dict"),
    ],
)
def test_record_source_checks_its_records(records, message):
    with pytest.raises(TypeError, match=message):
        RecordSource(records)


def test_file_sources_name_a_missing_or_wrong_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such parquet file"):
        ParquetSource(tmp_path / "missing.parquet")
    notes = tmp_path / "notes.parquet"
    notes.write_text("not parquet")
    with pytest.raises(ValueError, match=r"notes\.parquet is not a readable parquet file"):
        ParquetSource(notes)
    with pytest.raises(ValueError, match="is a file, not a dataset folder"):
        FolderSource(notes)
    with pytest.raises(FileNotFoundError, match="no such dataset folder"):
        FolderSource(tmp_path / "missing")
