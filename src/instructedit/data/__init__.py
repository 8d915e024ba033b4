"""Editing datasets: records, the official folder layout, parquet / ``datasets``, conversions."""

from instructedit._public import publish
from instructedit.data._folder import (
    SPLITS,
    FolderSample,
    folder_index,
    load_folder_sample,
    read_folder_dataset,
    write_caption_folder,
    write_json_atomic,
    write_seeds_index,
)
from instructedit.data._parquet import (
    COLUMNS,
    folder_to_parquet,
    parquet_row,
    parquet_to_folder,
    read_parquet,
    write_parquet,
)
from instructedit.data._records import EditRecord

__all__ = [
    "COLUMNS",
    "SPLITS",
    "EditRecord",
    "FolderSample",
    "folder_index",
    "folder_to_parquet",
    "load_folder_sample",
    "parquet_row",
    "parquet_to_folder",
    "read_folder_dataset",
    "read_parquet",
    "write_caption_folder",
    "write_json_atomic",
    "write_parquet",
    "write_seeds_index",
]

publish(__name__, globals(), __all__)
