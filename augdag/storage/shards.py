"""Image shards: StageWriter writes a stage's images as bounded-size `.npy` shards beside its manifest; StageData
reads them back through memory maps (a least-recently-used budget of MAPPED_BYTES) with the manifest's checks.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from augdag import faults
from augdag.errors import DataError
from augdag.storage.manifest import read_manifest, write_manifest
from augdag.storage.schema import _SHARD_NAME, MANIFEST, SCHEMA, SHARDS, content_hash, row


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
        """The images of manifest rows, stacked (one indexed read per shard, with image()'s checks)."""
        if len(rows) == 0:
            return np.zeros((0, 1, 1, 1), np.uint8)
        cols = ["shard", "index", "height", "width", "channels"]
        missing = [c for c in cols if c not in rows.columns]
        if missing:
            raise self._bad_row(rows.iloc[0].get("sample_id", rows.index[0]), _NO_PLACE)
        ids = rows["sample_id"].to_numpy() if "sample_id" in rows.columns else rows.index.to_numpy()
        return np.stack(self.images_of({"sample_id": ids, **{c: rows[c].to_numpy() for c in cols}}))

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
