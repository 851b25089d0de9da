"""Stage outputs: a Parquet manifest (one row per sample) plus bounded-size `.npy` shards.

Never one file per sample (DVC hashes every file). Writes are atomic: a stage writes into a
hidden sibling folder and renames it into place, so a crash leaves the last good output or none.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import re
import shutil
import sys
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from augdag import faults
from augdag.errors import DataError, StorageError

MANIFEST = "manifest.parquet"
SHARDS = "shards"

SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("split", pa.string()),
        ("branch", pa.string()),
        ("label", pa.int32()),
        ("soft_label", pa.list_(pa.float32())),
        ("parent_ids", pa.list_(pa.string())),
        ("source", pa.string()),
        ("op_params", pa.string()),
        ("seed", pa.int64()),
        ("generator_hash", pa.string()),
        ("scores", pa.string()),
        ("gate", pa.string()),
        ("gate_reason", pa.string()),
        ("content_hash", pa.string()),
        ("shard", pa.string()),
        ("index", pa.int32()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("channels", pa.int32()),
        ("weight", pa.float64()),
        ("text", pa.string()),  # modality text: the sample's text (no shard); null for images and Mixup pairs
    ]
)
COLUMNS = SCHEMA.names
_COLUMN_SET = frozenset(COLUMNS)
OPTIONAL = {"text"}  # manifests written before the column existed read it as null


_HASH_PREFIX: dict[tuple, "hashlib._Hash"] = {}


def content_hash(image: np.ndarray) -> str:
    """sha256 over shape, dtype and bytes of one HxWxC uint8 image."""
    a = np.ascontiguousarray(image)
    key = (a.shape, a.dtype.str)
    start = _HASH_PREFIX.get(key)
    if start is None:  # the hash of "shape|dtype|", kept per shape: str(dtype) alone costs more than the hashing
        start = _HASH_PREFIX[key] = hashlib.sha256(f"{a.shape}|{a.dtype}|".encode())
    h = start.copy()
    h.update(a)
    return h.hexdigest()


def text_hash(text: str) -> str:
    """sha256 of one text sample (UTF-8), for the content_hash column of text manifests."""
    return hashlib.sha256(b"text|" + text.encode("utf-8")).hexdigest()


_PLAIN_TYPES = frozenset({str, int, type(None)})


def row(**fields) -> dict:
    """A manifest row with every column present (None where not given)."""
    unknown = fields.keys() - _COLUMN_SET
    if unknown:
        raise KeyError(f"unknown manifest columns: {sorted(unknown)}")
    get = fields.get
    # str, int and None pass _plain unchanged; checking the type first skips its calls for most values
    return {c: v if type(v := get(c)) in _PLAIN_TYPES else _plain(v) for c in COLUMNS}


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield an empty temporary sibling of `final`; on success it replaces `final` in one step.

    The swap is one atomic rename (Linux renameat2 RENAME_EXCHANGE), so a reader sees the whole
    previous output or the whole new one, never a mix or nothing, and a process killed at any moment
    leaves the last good output in place. Where the filesystem cannot exchange, the previous output is
    moved aside first; a crash between the two renames leaves it as `.NAME.old-PID`, put back by the
    next write. Leftovers of killed writers (`.NAME.tmp-PID`) are removed by the next write. A write that
    fails for lack of space (or quota, or a read-only disk) raises StorageError naming the output;
    nothing is published and the previous output stays.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _clear_leftovers(final)
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
        _remove(tmp)
        tmp.mkdir()
    except OSError as err:
        if _out_of_space(err):
            raise _storage_error(final, err) from None
        raise
    try:
        yield tmp
        faults.point(f"publish:{final.name}")
        _publish(tmp, final)
    except BaseException as err:
        _remove(tmp)
        if _out_of_space(err):
            raise _storage_error(final, err) from None
        raise


_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")  # numpy's tofile/np.save on a full disk (no errno)


def _out_of_space(err: BaseException) -> bool:
    if isinstance(err, StorageError):
        return True
    if not isinstance(err, OSError):
        return False
    return err.errno in _NO_SPACE or (err.errno is None and bool(_SHORT_WRITE.search(str(err))))


def _storage_error(final: Path, err: BaseException) -> StorageError:
    if isinstance(err, StorageError):
        detail = str(err)
    elif err.errno is None:
        detail = f"the disk is full or over quota (a short write: {err})"
    else:
        detail = f"{err.strerror or err}" + (f" (writing {err.filename})" if err.filename else "")
    return StorageError(f"{final}: cannot write this output: {detail}. Nothing was published; the previous "
                        f"output at {final} (if any) is kept. Free space on that disk and run the stage again.")


def _remove(path: Path) -> None:
    """Delete a file, link or folder tree if it exists; never raises."""
    try:
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.exists():
            shutil.rmtree(path, ignore_errors=True)
    except OSError:
        pass


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftover: an earlier write of this process that was interrupted
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clear_leftovers(final: Path) -> None:
    """Remove the temporary folders of writers that died; put back a last output a crash left moved aside."""
    for kind in ("tmp", "old"):
        for p in sorted(final.parent.glob(f".{glob.escape(final.name)}.{kind}-*")):
            pid = p.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or _pid_alive(int(pid)):
                continue
            if kind == "old" and not (final.exists() or final.is_symlink()):
                os.replace(p, final)  # the last good output, moved aside by a publish that was killed
            else:
                _remove(p)


_RENAME_EXCHANGE = 2
_renameat2 = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    global _renameat2
    if sys.platform != "linux" or "no-exchange" in os.environ.get(faults.ENV, ""):
        return False
    if _renameat2 is None:
        try:
            import ctypes

            fn = ctypes.CDLL(None, use_errno=True).renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            _renameat2 = (fn, ctypes.get_errno)
        except (OSError, AttributeError):
            _renameat2 = False
    if not _renameat2:
        return False
    fn, get_errno = _renameat2
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def _publish(tmp: Path, final: Path) -> None:
    if not (final.exists() or final.is_symlink()):
        os.rename(tmp, final)
        return
    if _exchange(tmp, final):
        _remove(tmp)  # now holds the previous output
        return
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    _remove(old)
    os.replace(final, old)
    faults.point(f"swap:{final.name}")
    os.replace(tmp, final)
    _remove(old)


def write_text(path: str | Path, text: str) -> None:
    """Write a file atomically: a hidden temporary sibling, then a rename. A full disk raises StorageError
    naming the file, and the previous file stays."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException as err:
        _remove(tmp)
        if _out_of_space(err):
            raise StorageError(f"{path}: cannot write: {err.strerror or err}; the previous file (if any) is kept") from None
        raise
    faults.wrote(path)


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path):
    """The parsed file, or None when it does not exist."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None


def try_read_json(path: str | Path):
    """read_json that never raises: None for a file that is absent or unreadable."""
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def load_json(path: str | Path, what: str):
    """A JSON file a stage wrote, or DataError naming it (missing, not UTF-8, not JSON)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found (run the upstream stage first)") from None
    except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise DataError(f"{path}: {what} is not readable JSON: {err}") from None


class StageWriter:
    """Writes one stage output folder as it goes: each full shard is saved and its manifest rows appended to
    manifest.parquet as one row group, so memory holds at most one shard of images and rows."""

    def __init__(self, folder: Path, shard_size: int = 4096, prefix: str = "shard"):
        self.folder = Path(folder)
        self.shard_size = shard_size
        self.prefix = prefix
        (self.folder / SHARDS).mkdir(parents=True, exist_ok=True)
        self.count = 0
        self._pending: list[np.ndarray] = []
        self._pending_rows: list[dict] = []
        self._n_shards = 0
        self._parquet: pq.ParquetWriter | None = None

    def add(self, image: np.ndarray, **fields) -> dict:
        if image.dtype != np.uint8 or image.ndim != 3:
            raise ValueError(f"images are HxWxC uint8, got {image.dtype} {image.shape}")
        h, w, c = image.shape
        r = row(content_hash=content_hash(image), height=h, width=w, channels=c, **fields)
        if self._pending and self._pending[0].shape != image.shape:
            self._flush()
        self._pending.append(image)
        self._pending_rows.append(r)
        if len(self._pending) >= self.shard_size:
            self._flush()
        return r

    def _flush(self) -> None:
        if not self._pending:
            return
        name = f"{self.prefix}-{self._n_shards:05d}.npy"
        np.save(self.folder / SHARDS / name, np.stack(self._pending), allow_pickle=False)
        faults.wrote(self.folder / SHARDS / name)
        for i, r in enumerate(self._pending_rows):
            r["shard"], r["index"] = name, i
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.folder / MANIFEST, SCHEMA, compression="zstd")
        self._parquet.write_table(pa.Table.from_pylist(self._pending_rows, schema=SCHEMA))
        self.count += len(self._pending_rows)
        self._n_shards += 1
        self._pending, self._pending_rows = [], []

    def close(self, frame: bool = True) -> pd.DataFrame | None:
        """Finish manifest.parquet; the manifest as a frame (read back), or None with frame=False."""
        self._flush()
        if self._parquet is None:
            write_manifest(self.folder / MANIFEST, [])
        else:
            self._parquet.close()
            faults.wrote(self.folder / MANIFEST)
        return read_manifest(self.folder) if frame else None


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


def _plain(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v


def read_manifest(folder: str | Path, name: str = MANIFEST) -> pd.DataFrame:
    path = Path(folder) / name
    if not path.exists():
        raise DataError(f"{path}: manifest not found (run the upstream stage first)")
    return to_frame(read_table(path))


_SHARD_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.npy")


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
    bad("label", "missing or negative (labels are class indices 0, 1, ...)", pc.or_(pc.is_null(label), pc.less(label, 0)))
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


MAPPED_BYTES = 256 << 20  # shard bytes a StageData keeps memory-mapped (at least one shard)
_SHARED: dict[tuple, "StageData"] = {}
_SHARED_LOCK = threading.Lock()


_NO_PLACE = "has no shard, index or shape"


class StageData:
    """Read access to one stage output folder."""

    def __init__(self, folder: str | Path, manifest: bool = True):
        """manifest=False: read manifest.parquet only when .manifest is first asked for (a stage that streams
        the manifest itself needs only the shards)."""
        self.folder = Path(folder)
        self._manifest = read_manifest(self.folder) if manifest else None
        self._cache: dict[str, np.ndarray] = {}  # open shard maps, least recently used first
        self._mapped = 0
        self._lock = threading.Lock()
        self._id_index: pd.Index | None = None  # sample_id -> row, built by the first lookup()

    @classmethod
    def shared(cls, folder: str | Path) -> "StageData":
        """A read-only StageData shared in this process while its manifest file stays the same (same inode, size
        and mtime: a stage's atomic publish gives a new file). Branch chunks run on workers and each opens the
        ingest output; reading its manifest per chunk cost O(raw rows) per 512 samples."""
        folder = Path(folder).resolve()
        try:
            st = (folder / MANIFEST).stat()
        except OSError:
            return cls(folder)  # raises the DataError that names what is missing
        key = (folder, st.st_ino, st.st_size, st.st_mtime_ns)
        with _SHARED_LOCK:
            hit = _SHARED.get(key)
        if hit is None:
            hit = cls(folder)
            with _SHARED_LOCK:
                _SHARED[key] = hit
                while len(_SHARED) > 4:
                    _SHARED.pop(next(iter(_SHARED)))
        return hit

    @property
    def manifest(self) -> pd.DataFrame:
        if self._manifest is None:
            self._manifest = read_manifest(self.folder)
        return self._manifest

    def shard(self, name: str) -> np.ndarray:
        """The shard `name`, memory-mapped. At most MAPPED_BYTES of shards stay mapped (least recently used go
        first): pages read through a map count in the process's RSS until it is closed, and a stage that
        reads a million samples reads every shard of its input."""
        with self._lock:
            a = self._cache.pop(name, None)
            if a is not None:
                self._cache[name] = a  # most recently used last
                return a
        a = self._open(name)
        with self._lock:
            if name not in self._cache:
                self._cache[name] = a
                self._mapped += a.nbytes
                while self._mapped > MAPPED_BYTES and len(self._cache) > 1:
                    self._mapped -= self._cache.pop(next(iter(self._cache))).nbytes
            return self._cache[name]

    def _open(self, name: str) -> np.ndarray:
        path = self.folder / SHARDS / str(name)
        if not isinstance(name, str) or not _SHARD_NAME.fullmatch(name):
            raise DataError(f"{path}: shard name {name!r} in {self.folder / MANIFEST} is not a plain .npy file name")
        if not path.is_file():
            raise DataError(f"{path}: shard named in the manifest is missing")
        try:
            a = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:  # truncated, not .npy, object arrays (pickles)
            raise DataError(f"{path}: not a readable image shard: {err}") from None
        if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != 4:
            raise DataError(f"{path}: image shards hold N x H x W x C uint8 arrays, this one holds "
                            f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}")
        return a

    def _bad_row(self, sid, problem: str) -> DataError:
        """image()'s and images_of()'s error for sample `sid`: 'has no shard, ...', 'points at index ...'."""
        return DataError(f"{self.folder / MANIFEST}: sample {sid!r} {problem}")

    @staticmethod
    def _out_of_range(i, shard: str, n: int) -> str:
        return f"points at index {i} of {shard}, which holds {n} images"

    @staticmethod
    def _wrong_shape(want, got, shard: str) -> str:
        return f"is {'x'.join(map(str, want))} in the manifest but {'x'.join(map(str, got))} in {shard}"

    def image(self, r) -> np.ndarray:
        sid = r.get("sample_id", getattr(r, "name", None))
        where = (r.get("shard"), r.get("index"), r.get("height"), r.get("width"), r.get("channels"))
        if any(v is None or v is pd.NA for v in where):
            raise self._bad_row(sid, _NO_PLACE)
        a = self.shard(where[0])
        i = int(where[1])
        if not 0 <= i < len(a):
            raise self._bad_row(sid, self._out_of_range(i, where[0], len(a)))
        img = np.asarray(a[i])
        want = tuple(int(v) for v in where[2:])
        if img.shape != want:
            raise self._bad_row(sid, self._wrong_shape(want, img.shape, where[0]))
        return img

    def images(self, rows: pd.DataFrame) -> np.ndarray:
        if len(rows) == 0:
            return np.zeros((0, 1, 1, 1), np.uint8)
        return np.stack([self.image(r) for _, r in rows.iterrows()])

    def lookup(self, ids: list[str], columns: list[str]) -> dict[str, np.ndarray]:
        """Manifest columns of the rows with these sample ids, in the order of `ids`, as arrays.

        The id -> row index is built once per StageData (a shared one keeps it for every chunk a worker reads):
        a per-chunk `set_index(...).loc[...]` and records cost as much as the traditional ops on 28x28 images.
        """
        with self._lock:
            if self._id_index is None:
                self._id_index = pd.Index(self.manifest["sample_id"])
            index = self._id_index
        pos = index.get_indexer(ids)
        if (pos < 0).any():
            missing = [i for i, q in zip(ids, pos) if q < 0]
            raise DataError(f"{self.folder / MANIFEST}: no row for sample id(s) {', '.join(map(repr, missing[:5]))}"
                            + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        m = self.manifest
        return {c: m[c].to_numpy()[pos] for c in columns}

    def images_of(self, rows: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The images of rows given as column arrays (`lookup` with sample_id, shard, index, height, width,
        channels): image() for each, with the same checks, reading each shard's images in one indexed copy."""
        ids, shards, where = rows["sample_id"], rows["shard"], rows["index"]
        shape = np.stack([rows["height"], rows["width"], rows["channels"]], axis=1) if len(ids) else None
        out: list = [None] * len(ids)
        groups: dict = {}
        for k, name in enumerate(shards):
            groups.setdefault(name, []).append(k)
        for name, ks in groups.items():
            bad = [k for k in ks if name is None or name is pd.NA or pd.isna(where[k]) or pd.isna(shape[k]).any()]
            if bad:
                raise self._bad_row(ids[bad[0]], _NO_PLACE)
            a = self.shard(name)
            i = np.asarray(where[ks], dtype=np.int64)
            off = np.flatnonzero((i < 0) | (i >= len(a)))
            if len(off):
                raise self._bad_row(ids[ks[off[0]]], self._out_of_range(i[off[0]], name, len(a)))
            want = shape[ks].astype(np.int64)
            wrong = np.flatnonzero((want != np.asarray(a.shape[1:])).any(axis=1))
            if len(wrong):
                raise self._bad_row(ids[ks[wrong[0]]], self._wrong_shape(want[wrong[0]], a.shape[1:], name))
            block = a[i]  # one copy for the shard's images of this call
            for j, k in enumerate(ks):
                out[k] = block[j]
        return out
