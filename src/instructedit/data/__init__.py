"""Editing datasets: records, the official folder layout, parquet / ``datasets``, conversions,
MagicBrush sessions and diffusers' ``metadata.jsonl`` folders."""

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
from instructedit.data._magicbrush import (
    MAGICBRUSH_COLUMNS,
    EditTurn,
    MagicBrushTurnFiles,
    SessionRecord,
    load_magicbrush_turn,
    magicbrush_index,
    mask_edit_region,
    read_magicbrush,
    read_metadata_jsonl,
)
from instructedit.data._parquet import (
    COLUMNS,
    decode_image_cell,
    folder_to_parquet,
    parquet_row,
    parquet_to_folder,
    read_parquet,
    write_parquet,
)
from instructedit.data._records import EditRecord

__all__ = [
    "COLUMNS",
    "MAGICBRUSH_COLUMNS",
    "SPLITS",
    "EditRecord",
    "EditTurn",
    "FolderSample",
    "MagicBrushTurnFiles",
    "SessionRecord",
    "decode_image_cell",
    "folder_index",
    "folder_to_parquet",
    "load_folder_sample",
    "load_magicbrush_turn",
    "magicbrush_index",
    "mask_edit_region",
    "parquet_row",
    "parquet_to_folder",
    "read_folder_dataset",
    "read_magicbrush",
    "read_metadata_jsonl",
    "read_parquet",
    "write_caption_folder",
    "write_json_atomic",
    "write_parquet",
    "write_seeds_index",
]

publish(__name__, globals(), __all__)
