"""Stage outputs: a Parquet manifest (one row per sample) plus bounded-size `.npy` shards.

Never one file per sample (DVC hashes every file). Writes are atomic: a stage writes into a
hidden sibling folder and renames it into place, so a crash leaves the last good output or none.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from augdag.errors import DataError

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
    ]
)
COLUMNS = SCHEMA.names


def content_hash(image: np.ndarray) -> str:
    """sha256 over shape, dtype and bytes of one HxWxC uint8 image."""
    a = np.ascontiguousarray(image)
    h = hashlib.sha256(f"{a.shape}|{a.dtype}|".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def row(**fields) -> dict:
    """A manifest row with every column present (None where not given)."""
    unknown = set(fields) - set(COLUMNS)
    if unknown:
        raise KeyError(f"unknown manifest columns: {sorted(unknown)}")
    return {c: _plain(fields.get(c)) for c in COLUMNS}


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield an empty temporary sibling of `final`; on success it replaces `final` by rename."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    if final.exists() or final.is_symlink():
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def write_text(path: str | Path, text: str) -> None:
    """Write a file atomically: a hidden temporary sibling, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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


class StageWriter:
    """Collects samples for one stage output folder and flushes full shards as it goes."""

    def __init__(self, folder: Path, shard_size: int = 4096, prefix: str = "shard"):
        self.folder = Path(folder)
        self.shard_size = shard_size
        self.prefix = prefix
        (self.folder / SHARDS).mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        self._pending: list[np.ndarray] = []
        self._pending_rows: list[dict] = []
        self._n_shards = 0

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
        for i, r in enumerate(self._pending_rows):
            r["shard"], r["index"] = name, i
        self.rows.extend(self._pending_rows)
        self._n_shards += 1
        self._pending, self._pending_rows = [], []

    def close(self) -> pd.DataFrame:
        self._flush()
        write_manifest(self.folder / MANIFEST, self.rows)
        return manifest_frame(self.rows)


_NULLABLE = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype()}


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    """Integer columns stay exact when they hold nulls (63-bit seeds must not pass through float64)."""
    return table.to_pandas(types_mapper=_NULLABLE.get)


def manifest_frame(rows: list[dict]) -> pd.DataFrame:
    return _to_pandas(pa.Table.from_pylist(rows, schema=SCHEMA))


def write_manifest(path: Path, rows: list[dict] | pd.DataFrame) -> None:
    if isinstance(rows, pd.DataFrame):
        rows = rows.to_dict("records")
    table = pa.Table.from_pylist([{c: _plain(r.get(c)) for c in COLUMNS} for r in rows], schema=SCHEMA)
    pq.write_table(table.replace_schema_metadata(None), path, compression="zstd")


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
    return _to_pandas(pq.read_table(path))


class StageData:
    """Read access to one stage output folder."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        self._cache: dict[str, np.ndarray] = {}

    def shard(self, name: str) -> np.ndarray:
        if name not in self._cache:
            path = self.folder / SHARDS / name
            if not path.exists():
                raise DataError(f"{path}: shard named in the manifest is missing")
            self._cache[name] = np.load(path, mmap_mode="r", allow_pickle=False)
        return self._cache[name]

    def image(self, r) -> np.ndarray:
        return np.asarray(self.shard(r["shard"])[int(r["index"])])

    def images(self, rows: pd.DataFrame) -> np.ndarray:
        if len(rows) == 0:
            return np.zeros((0, 1, 1, 1), np.uint8)
        return np.stack([self.image(r) for _, r in rows.iterrows()])
