"""Merge: raw train samples plus the gate's kept samples, each with a sampling weight.

`merge.weights[source]` is the probability mass of that source when the fine-tune draws a sample:
a sample's weight is weights[source] / (number of samples of that source), normalised to sum to 1
over the non-empty sources. A weight of 0 leaves the source out.

`merge.extra_sources` adds folders of the user's own images (one subfolder per class, class names
as in the raw data) as further sources. They have no parent and no pair, so they pass no gate;
their rows record the file they came from and its content hash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from augdag import gx, scoring
from augdag.data import read_labelled_folder
from augdag.errors import DataError
from augdag.layout import EXPECTATIONS, classes
from augdag.log import Progress, logger
from augdag.params import SOURCES, Params
from augdag.storage import (
    MANIFEST,
    StageData,
    StageWriter,
    atomic_dir,
    iter_tables,
    manifest_rows,
    parquet_chunks,
    read_columns,
    to_frame,
    write_json,
)
from augdag.tasks import out_dir

MERGED, MERGED_CLASSES = EXPECTATIONS / "merged.json", EXPECTATIONS / "merged_classes.json"
DERIVED = {"augmented": "branch", "soft_label_sum": "soft_label"}  # a column the suites check: the column it comes from
CHUNK_ROWS = 50_000


def _add_derived(frame: pd.DataFrame) -> pd.DataFrame:
    """The derived columns the merged suite checks, added in place (a copy of millions of rows is memory)."""
    if "branch" in frame:
        frame["augmented"] = (frame.branch != "raw").astype(int)
    if "soft_label" in frame:
        frame["soft_label_sum"] = scoring.soft_label_sum(frame.soft_label)
    return frame


def check_merged(p: Params, manifest: Path, n_classes: int, results: Path, chunk_rows: int | None = None) -> dict:
    """expectations/merged.json on the merged manifest (the Parquet file `manifest`) and merged_classes.json
    on its per-class mass.

    Memory stays flat in the rows' size: the suite's row-wise checks run on `chunk_rows` rows at a time
    (results merged.json, merged.part001.json, ...); its set-wide ones (unique ids, the augmented share as a
    column mean, the weights' sum) run once on a frame of only their columns (results merged.set.json)."""
    chunk_rows = chunk_rows or CHUNK_ROWS
    results.mkdir(parents=True, exist_ok=True)
    for old in results.glob("merged.part*.json"):
        old.unlink()
    lo, hi = p.merge.augmented_share
    label_set = list(range(n_classes))
    params = {"label_set": label_set, "augmented_min": lo, "augmented_max": hi,
              "source_set": list(SOURCES) + sorted(p.merge.extra_sources)}
    modes = gx.modes_for(MERGED, p.quality.modes)
    split = gx.split_checks(MERGED)
    outcomes: list[dict] = []
    n = 0
    progress = Progress("merge checks", manifest_rows(manifest.parent, manifest.name))
    for i, frame in enumerate(parquet_chunks(manifest, chunk_rows)):
        result = gx.run_suite(_add_derived(frame), MERGED, params,
                              modes={**modes, **dict.fromkeys(split.set_wide, "off")},
                              results_path=results / ("merged.json" if i == 0 else f"merged.part{i:03d}.json"))
        where = f" (rows {n}-{n + len(frame) - 1})" if i or len(frame) == chunk_rows else ""
        for w in result.warnings:
            logger().warning("merge%s: %s", where, w.line())
        outcomes.append(result.checks)
        n += len(frame)
        progress.update(len(frame))
    wanted = list(dict.fromkeys(["sample_id", "label", "weight", "branch"]
                                + [DERIVED.get(c, c) for c in split.set_columns]))
    whole = _add_derived(read_columns(manifest, wanted))
    result = gx.run_suite(whole, MERGED, params, modes={**modes, **dict.fromkeys(split.row_wise, "off")},
                          results_path=results / "merged.set.json")
    for w in result.warnings:
        logger().warning("merge: %s", w.line())
    outcomes.append(result.checks)
    per_class = whole.groupby("label").agg(count=("sample_id", "size"), mass=("weight", "sum")).reset_index()
    uniform = 1.0 / n_classes
    classes_ = gx.run_suite(per_class, MERGED_CLASSES,
                            {"label_set": label_set, "n_classes": n_classes,
                             "mass_min": uniform / p.merge.class_balance,
                             "mass_max": uniform * p.merge.class_balance},
                            modes=gx.modes_for(MERGED_CLASSES, p.quality.modes), id_column="label",
                            results_path=results / "merged_classes.json")
    for w in classes_.warnings:
        logger().warning("merge: %s", w.line())
    outcomes.append(classes_.checks)
    checks: dict[str, bool] = {}
    for outcome in outcomes:
        for name, c in outcome.items():
            if c["mode"] != "off":
                checks[name] = checks.get(name, True) and bool(c["success"])
    return {"augmented_share": round(float(whole.augmented.mean()), 6),
            "passed": sorted(k for k, v in checks.items() if v),
            "warned": sorted(k for k, v in checks.items() if not v)}


def extra_source(name: str, folder: str, p: Params, class_names: list[str]) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Rows and images of one extra source folder; its class folders must be classes of the raw data."""
    ip, root = p.ingest, Path(folder)
    files, labels, images = read_labelled_folder(folder, class_names, ip.image_size, ip.channels,
                                                 ip.max_image_pixels, f"merge.extra_sources.{name}")
    rows = []
    for path, label in zip(files, labels):
        rows.append({"sample_id": f"{name}/{path.relative_to(root).as_posix()}", "split": "train", "branch": name,
                     "label": int(label), "soft_label": None, "parent_ids": [], "source": str(path),
                     "op_params": "{}", "seed": None, "generator_hash": None, "scores": None, "gate": "not gated",
                     "gate_reason": None})
    return pd.DataFrame(rows), images


FIELDS = ("sample_id", "split", "branch", "label", "soft_label", "parent_ids", "source", "op_params", "seed",
          "generator_hash", "scores", "gate", "gate_reason")
COLUMNS_READ = FIELDS + ("shard", "index", "height", "width", "channels")  # extra sources have no shard columns


def _kept_counts(path: Path) -> dict[str, int]:
    """The gate's kept rows per branch, in the order the branches first appear (two columns read; the rows
    themselves are checked when _kept_chunks reads them)."""
    if not path.exists():
        raise DataError(f"{path}: manifest not found (run the upstream stage first)")
    counts: dict[str, int] = {}
    try:
        with pq.ParquetFile(path) as f:
            for batch in f.iter_batches(columns=["branch", "gate"]):
                kept = batch.column("branch").filter(pc.fill_null(pc.equal(batch.column("gate"), "kept"), False))
                for v in pc.value_counts(kept).to_pylist():  # values in the order they first occur
                    counts[v["values"]] = counts.get(v["values"], 0) + v["counts"]
    except (pa.ArrowException, OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a readable Parquet manifest: {err}") from None
    return counts


def _kept_chunks(path: Path, branch: str) -> Iterator[pd.DataFrame]:
    """A branch's kept rows of the gate's manifest, a chunk at a time (each chunk checked as read_table does)."""
    for table in iter_tables(path, CHUNK_ROWS):
        keep = pc.and_(pc.equal(table.column("gate"), "kept"), pc.equal(table.column("branch"), branch))
        chunk = table.filter(pc.fill_null(keep, False))
        if chunk.num_rows:
            yield to_frame(chunk)


def run(p: Params, root: Path, **_) -> dict:
    """Streams: the gate's kept rows are read a chunk at a time, once per branch, and written as they come."""
    raw = StageData(out_dir(root, "ingest"))
    gate_manifest = out_dir(root, "quality") / MANIFEST
    raw_train = raw.manifest[raw.manifest.split == "train"]
    sizes = {"raw": len(raw_train), **_kept_counts(gate_manifest)}
    extra = {}
    for name, folder in p.merge.extra_sources.items():
        extra[name] = extra_source(name, folder, p, classes(root))
        sizes[name] = len(extra[name][0])
    weights = {s: p.merge.weights.get(s, 1.0) for s in sizes if sizes[s] and p.merge.weights.get(s, 1.0) > 0}
    if not weights:
        raise DataError("merge: no samples left (every source is empty or has weight 0 in merge.weights)")
    total = sum(weights.values())
    summary = {}
    with atomic_dir(out_dir(root, "merge")) as tmp:
        w = StageWriter(tmp, p.ingest.shard_size)
        progress = Progress("merge", sum(sizes[s] for s in weights))
        for source in weights:
            if source == "raw":
                chunks, reader = [raw_train], raw
            elif source in extra:
                chunks, reader = [extra[source][0]], None
            else:
                chunks, reader = _kept_chunks(gate_manifest, source), StageData(out_dir(root, source), manifest=False)
            per_sample = weights[source] / total / sizes[source]
            i = 0
            for chunk in chunks:  # a branch's rows a chunk at a time, as Python values (no Series per row)
                for r in chunk[[c for c in COLUMNS_READ if c in chunk.columns]].to_dict("records"):
                    fields = {k: r[k] for k in FIELDS}
                    w.add(extra[source][1][i] if reader is None else reader.image(r), **fields, weight=per_sample)
                    i += 1
                progress.update(len(chunk))
            if i != sizes[source]:  # the gate's manifest changed while it was read
                raise DataError(f"{gate_manifest}: {source} has {i} kept rows, {sizes[source]} when counted")
            summary[source] = {"samples": sizes[source], "mass": weights[source] / total}
        w.close(frame=False)
        summary["checks"] = check_merged(p, tmp / MANIFEST, len(classes(root)), out_dir(root, "validation") / "merge")
        write_json(tmp / "summary.json", summary)
    return summary
