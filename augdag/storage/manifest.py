"""Manifest files: Parquet with exactly the schema's columns, written whole or a frame at a time, read back
checked (read_table, iter_tables) as frames whose integer columns stay exact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from augdag import faults
from augdag.errors import DataError
from augdag.storage.schema import _SHARD_NAME, COLUMNS, MANIFEST, OPTIONAL, SCHEMA, _plain

_NULLABLE = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype()}


def to_frame(table: pa.Table) -> pd.DataFrame:
    """Integer columns stay exact when they hold nulls (63-bit seeds must not pass through float64)."""
    return table.to_pandas(types_mapper=_NULLABLE.get)


def manifest_frame(rows: list[dict]) -> pd.DataFrame:
    return to_frame(pa.Table.from_pylist(rows, schema=SCHEMA))


def _frame_table(rows: pd.DataFrame) -> pa.Table:
    frame = rows.reindex(columns=COLUMNS).reset_index(drop=True)
    return pa.Table.from_arrays([_column(frame[c], SCHEMA.field(c).type) for c in COLUMNS], schema=SCHEMA)


def write_manifest(path: Path, rows: list[dict] | pd.DataFrame) -> None:
    if isinstance(rows, pd.DataFrame):  # column-wise: no dict per row (quality and merge write millions)
        table = _frame_table(rows)
    else:
        table = pa.Table.from_pylist([{c: _plain(r.get(c)) for c in COLUMNS} for r in rows], schema=SCHEMA)
    pq.write_table(table.replace_schema_metadata(None), path, compression="zstd")
    faults.wrote(path)


class ManifestWriter:
    """A manifest written a frame at a time (each a row group), for stages whose rows come in chunks;
    close() writes an empty manifest when no rows came."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._parquet: pq.ParquetWriter | None = None

    def write(self, rows: pd.DataFrame) -> None:
        if not len(rows):
            return
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.path, SCHEMA, compression="zstd")
        self._parquet.write_table(_frame_table(rows))

    def close(self) -> None:
        if self._parquet is None:
            write_manifest(self.path, [])
        else:
            self._parquet.close()
            faults.wrote(self.path)


def manifest_rows(folder: str | Path, name: str = MANIFEST) -> int:
    """The number of rows of a manifest, from its Parquet footer (a missing or unreadable file: DataError)."""
    path = Path(folder) / name
    try:
        return pq.read_metadata(path).num_rows
    except (pa.ArrowException, OSError, ValueError):
        return read_manifest(folder, name).shape[0]  # raises the DataError that names what is wrong


def table_chunks(table: pa.Table, rows: int) -> Iterator[pd.DataFrame]:
    """A manifest table as consecutive frames of at most `rows` rows (each indexed from 0)."""
    for start in range(0, table.num_rows, rows):
        yield to_frame(table.slice(start, rows))


def read_columns(path: str | Path, columns: list[str]) -> pd.DataFrame:
    """Some columns of a Parquet file this process wrote, as a frame (no checks)."""
    return to_frame(pq.read_table(path, columns=columns))


def parquet_chunks(path: str | Path, rows: int, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """A Parquet file as consecutive frames of `rows` rows (the last may be shorter; each indexed from 0),
    read a batch at a time: memory holds one frame, not the file. For a file this process wrote (no checks)."""
    with pq.ParquetFile(path) as f:
        for table in _regroup(f.iter_batches(batch_size=rows, columns=columns), rows):
            yield to_frame(table)


def _column(series: pd.Series, type_: pa.DataType) -> pa.Array:
    """One manifest column as Arrow, with _plain's conversions (NaN and pd.NA are null, arrays are lists)."""
    if series.isna().all():
        return pa.nulls(len(series), type=type_)
    if pa.types.is_list(type_) or series.dtype == object:
        return pa.array([_plain(v) for v in series.tolist()], type=type_)
    return pa.array(series, type=type_, from_pandas=True)


def read_manifest(folder: str | Path, name: str = MANIFEST) -> pd.DataFrame:
    path = Path(folder) / name
    if not path.exists():
        raise DataError(f"{path}: manifest not found (run the upstream stage first)")
    return to_frame(read_table(path))


def read_table(path: str | Path, **kwargs) -> pa.Table:
    """A manifest as an Arrow table with exactly SCHEMA's columns and types, checked; DataError naming the
    file and the column otherwise (not Parquet, a column missing or of another type, NaN or infinite
    weights, a shard name that is not a plain file name...)."""
    path = Path(path)
    try:
        table = pq.read_table(path, **kwargs)
    except (pa.ArrowException, OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a readable Parquet manifest: {err}") from None
    table = _conform(table, path)
    _check_values(table, path)
    return table


def iter_tables(path: str | Path, rows: int) -> Iterator[pa.Table]:
    """A manifest as consecutive Arrow tables of `rows` rows (the last may be shorter), read a batch at a time,
    each conformed and checked as read_table does (row numbers in errors count from the file's start; sample
    ids are unique within each table: a check across tables is the reader's)."""
    path = Path(path)
    start = 0
    try:
        f = pq.ParquetFile(path)
        for table in _regroup(f.iter_batches(batch_size=rows), rows):
            table = _conform(table, path)
            _check_values(table, path, start)
            start += table.num_rows
            yield table
    except (pa.ArrowException, OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a readable Parquet manifest: {err}") from None


def _regroup(batches, rows: int) -> Iterator[pa.Table]:
    """Record batches regrouped into tables of exactly `rows` rows (the last may be shorter)."""
    pending: list[pa.RecordBatch] = []
    have = 0
    for batch in batches:
        pending.append(batch)
        have += batch.num_rows
        while have >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            pending, have = rest.to_batches(), rest.num_rows
    if have:
        yield pa.Table.from_batches(pending)


def _conform(table: pa.Table, path: Path) -> pa.Table:
    """`table` with exactly SCHEMA's columns, in its order and types (OPTIONAL ones added as nulls)."""
    names = table.column_names
    for c in OPTIONAL - set(names):
        table = table.append_column(SCHEMA.field(c), pa.nulls(table.num_rows, SCHEMA.field(c).type))
    names = table.column_names
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise DataError(f"{path}: manifest lacks column(s) {missing}; augdag manifests have: {', '.join(COLUMNS)}")
    cols = []
    for field in SCHEMA:
        if names.count(field.name) != 1:
            raise DataError(f"{path}: manifest has column {field.name!r} {names.count(field.name)} times")
        col = table.column(field.name)
        if not col.type.equals(field.type):
            try:
                col = col.cast(field.type)
            except (pa.ArrowException, ValueError, TypeError) as err:
                raise DataError(f"{path}: manifest column {field.name!r} holds {col.type}, expected {field.type} "
                                f"({err})") from None
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=SCHEMA)


def _check_values(t: pa.Table, path: Path, offset: int = 0) -> None:
    """read_table's value checks; `offset`: the file row number of t's first row (for the messages)."""
    import pyarrow.compute as pc

    def bad(column: str, what: str, mask) -> None:
        mask = pc.fill_null(mask, False)
        if pc.any(mask).as_py():
            i = pc.index(mask, True).as_py()
            sid = t.column("sample_id")[i].as_py()
            raise DataError(f"{path}: manifest column {column!r}, row {offset + i} (sample {sid!r}): {what}")

    n = t.num_rows
    if not n:
        return
    sid = t.column("sample_id")
    bad("sample_id", "missing", pc.is_null(sid))
    if pc.count_distinct(sid).as_py() != n:
        counts = pc.value_counts(sid)
        dup = next(v["values"] for v in counts.to_pylist() if v["counts"] > 1)
        raise DataError(f"{path}: manifest column 'sample_id': {dup!r} appears more than once")
    label = t.column("label")
    bad("label", "missing or negative (labels are class indices 0, 1, ...)",
        pc.or_(pc.is_null(label), pc.less(label, 0)))
    weight = t.column("weight")
    bad("weight", "not a finite number >= 0", pc.invert(pc.and_(pc.is_finite(weight), pc.greater_equal(weight, 0))))
    soft = pc.list_flatten(t.column("soft_label"))
    if len(soft):
        ok = pc.and_(pc.is_finite(soft), pc.and_(pc.greater_equal(soft, 0), pc.less_equal(soft, 1)))
        if not pc.all(pc.fill_null(ok, False)).as_py():
            rows = pc.list_parent_indices(t.column("soft_label"))
            i = rows[pc.index(pc.fill_null(ok, False), False).as_py()].as_py()
            raise DataError(f"{path}: manifest column 'soft_label', row {offset + i} (sample {sid[i].as_py()!r}): "
                            "probabilities must be finite numbers in [0, 1]")
    shard = t.column("shard")
    bad("shard", "not a plain .npy file name in shards/ (no folders, no '..')",
        pc.invert(pc.match_substring_regex(shard, f"^{_SHARD_NAME.pattern}$")))
    bad("index", "negative", pc.less(t.column("index"), 0))
    for c in ("height", "width", "channels"):
        bad(c, "must be >= 1", pc.less(t.column(c), 1))
