"""Stage outputs: a Parquet manifest (one row per sample) plus bounded-size `.npy` shards.

Never one file per sample (DVC hashes every file). Writes are atomic: a stage writes into a
hidden sibling folder and renames it into place, so a crash leaves the last good output or none.

One module per layer; import from `augdag.storage`, which re-exports them all:

- `augdag.storage.publish`: atomic publishing (atomic_dir for a folder, write_text / write_json for a file,
  StorageError on a full disk) and the JSON readers (read_json, try_read_json, load_json);
- `augdag.storage.schema`: the manifest's columns (SCHEMA, MANIFEST, SHARDS), row() and the content hashes
  (content_hash for images, text_hash for texts);
- `augdag.storage.manifest`: manifest files: write_manifest, ManifestWriter, read_manifest / read_table /
  iter_tables (checked against the schema), frames and chunks (to_frame, manifest_frame, table_chunks,
  parquet_chunks, read_columns, manifest_rows);
- `augdag.storage.shards`: the image shards: StageWriter writes them, StageData reads them through an LRU of
  memory maps (MAPPED_BYTES; set it on `augdag.storage.shards`).
"""

from __future__ import annotations

from augdag.storage.manifest import (
                                     ManifestWriter,
                                     iter_tables,
                                     manifest_frame,
                                     manifest_rows,
                                     parquet_chunks,
                                     read_columns,
                                     read_manifest,
                                     read_table,
                                     table_chunks,
                                     to_frame,
                                     write_manifest,
)
from augdag.storage.publish import (
                                     _out_of_space,  # noqa: F401  (augdag/cli.py: a full disk or another error)
                                     atomic_dir,
                                     load_json,
                                     read_json,
                                     try_read_json,
                                     write_json,
                                     write_text,
)
from augdag.storage.schema import (
                                     COLUMNS,
                                     MANIFEST,
                                     OPTIONAL,
                                     SCHEMA,
                                     SHARDS,
                                     content_hash,
                                     hard_label,
                                     row,
                                     sample_weights,
                                     text_hash,
)
from augdag.storage.shards import MAPPED_BYTES, StageData, StageWriter

__all__ = [
    # publish
    "atomic_dir", "write_text", "write_json", "read_json", "try_read_json", "load_json",
    # schema
    "MANIFEST", "SHARDS", "SCHEMA", "COLUMNS", "OPTIONAL", "content_hash", "text_hash", "row", "sample_weights",
    "hard_label",
    # manifest
    "to_frame", "manifest_frame", "write_manifest", "ManifestWriter", "manifest_rows", "table_chunks", "read_columns",
    "parquet_chunks", "read_manifest", "read_table", "iter_tables",
    # shards
    "StageWriter", "StageData", "MAPPED_BYTES",
]
