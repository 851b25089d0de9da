"""The manifest's schema: its columns, one row per sample, and the content hashes of images and texts."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pandas as pd
import pyarrow as pa

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


_SHARD_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.npy")


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


def sample_weights(weight) -> np.ndarray:
    """The `weight` column (a Series or array) as float64 sampling weights: merge's, and 1.0 where a row has
    none (every row of the stages before merge)."""
    w = np.array(pd.Series(weight, dtype="float64"), dtype=np.float64)  # a writable copy
    w[np.isnan(w)] = 1.0
    return w


def hard_label(soft, label) -> int:
    """A row's class index: its soft label's largest class where it has one (a mixed sample), else `label`."""
    if soft is None or (isinstance(soft, float) and soft != soft) or len(soft) == 0:
        return int(label)
    return int(np.argmax(np.asarray(soft, np.float32)))
