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

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from augdag import gate, gx
from augdag.data import load_image, scan_folder
from augdag.errors import DataError
from augdag.log import Progress, logger
from augdag.params import SOURCES, Params
from augdag.storage import MANIFEST, StageData, StageWriter, atomic_dir, read_table, table_chunks, write_json
from augdag.tasks import out_dir
from augdag.tasks.ingest import EXPECTATIONS, classes


def check_merged(p: Params, manifest: pd.DataFrame, n_classes: int, results: Path) -> dict:
    """expectations/merged.json on the merged manifest and merged_classes.json on its per-class mass."""
    results.mkdir(parents=True, exist_ok=True)
    frame = manifest  # the columns the suite checks are added in place: a copy of millions of rows is memory
    frame["augmented"] = (manifest.branch != "raw").astype(int)
    frame["soft_label_sum"] = gate.soft_label_sum(manifest.soft_label)
    lo, hi = p.merge.augmented_share
    label_set = list(range(n_classes))
    modes = p.quality.modes
    checks = {}
    merged = gx.gate_frame(frame, EXPECTATIONS / "merged.json",
                           {"label_set": label_set, "augmented_min": lo, "augmented_max": hi,
                            "source_set": list(SOURCES) + sorted(p.merge.extra_sources)},
                           modes=gx.modes_for(EXPECTATIONS / "merged.json", modes), results_path=results / "merged.json")
    per_class = frame.groupby("label").agg(count=("sample_id", "size"), mass=("weight", "sum")).reset_index()
    uniform = 1.0 / n_classes
    classes_ = gx.gate_frame(per_class, EXPECTATIONS / "merged_classes.json",
                             {"label_set": label_set, "n_classes": n_classes, "mass_min": uniform / p.merge.class_balance,
                              "mass_max": uniform * p.merge.class_balance},
                             modes=gx.modes_for(EXPECTATIONS / "merged_classes.json", modes), id_column="label",
                             results_path=results / "merged_classes.json")
    for result in (merged, classes_):
        for w in result.warnings:
            logger().warning("merge: %s", w.line())
        checks.update({k: v["success"] for k, v in result.checks.items() if v["mode"] != "off"})
    return {"augmented_share": round(float(frame.augmented.mean()), 6), "passed": sorted(k for k, v in checks.items() if v),
            "warned": sorted(k for k, v in checks.items() if not v)}


def extra_source(name: str, folder: str, p: Params, class_names: list[str]) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Rows and images of one extra source folder; its class folders must be classes of the raw data."""
    found, files = scan_folder(folder)
    # A class name holding '/' (Fashion-MNIST's 'T-shirt/top') is spelled with '_' as a folder name.
    by_folder = {c.replace("/", "_"): i for i, c in enumerate(class_names)}
    unknown = [c for c in found if c not in by_folder]
    if unknown:
        raise DataError(f"merge.extra_sources.{name} = {folder}: class folders {unknown} are not classes of the raw data "
                        f"(allowed: {sorted(by_folder)})")
    ip, root = p.ingest, Path(folder)
    rows, images = [], []
    for path, ci in files:
        images.append(load_image(path, ip.image_size, ip.channels, ip.max_image_pixels))
        rows.append({"sample_id": f"{name}/{path.relative_to(root).as_posix()}", "split": "train", "branch": name,
                     "label": by_folder[found[ci]], "soft_label": None, "parent_ids": [], "source": str(path),
                     "op_params": "{}", "seed": None, "generator_hash": None, "scores": None, "gate": "not gated",
                     "gate_reason": None})
    return pd.DataFrame(rows), images


FIELDS = ("sample_id", "split", "branch", "label", "soft_label", "parent_ids", "source", "op_params", "seed",
          "generator_hash", "scores", "gate", "gate_reason")
COLUMNS_READ = FIELDS + ("shard", "index", "height", "width", "channels")  # extra sources have no shard columns
CHUNK_ROWS = 50_000


def _kept_by_branch(root: Path) -> dict[str, pa.Table]:
    """The gate's kept rows per branch (Arrow, the order they first appear in the gate's manifest)."""
    table = read_table(out_dir(root, "quality") / MANIFEST)
    table = table.filter(pc.equal(table.column("gate"), "kept"))
    order = dict.fromkeys(table.column("branch").to_pylist())
    return {b: table.filter(pc.equal(table.column("branch"), b)) for b in order}


def run(p: Params, root: Path, **_) -> dict:
    raw = StageData(out_dir(root, "ingest"))
    parts: dict[str, pd.DataFrame | pa.Table] = {"raw": raw.manifest[raw.manifest.split == "train"]}
    parts.update(_kept_by_branch(root))
    extra_images = {}
    for name, folder in p.merge.extra_sources.items():
        parts[name], extra_images[name] = extra_source(name, folder, p, classes(root))
    weights = {s: p.merge.weights.get(s, 1.0) for s in parts if len(parts[s]) and p.merge.weights.get(s, 1.0) > 0}
    if not weights:
        raise DataError("merge: no samples left (every source is empty or has weight 0 in merge.weights)")
    total = sum(weights.values())
    summary = {}
    with atomic_dir(out_dir(root, "merge")) as tmp:
        w = StageWriter(tmp, p.ingest.shard_size)
        progress = Progress("merge", sum(len(parts[s]) for s in weights))
        for source in weights:
            rows = parts[source]
            reader = None if source in extra_images else raw if source == "raw" else StageData(out_dir(root, source),
                                                                                                manifest=False)
            per_sample = weights[source] / total / len(rows)
            chunks = table_chunks(rows, CHUNK_ROWS) if isinstance(rows, pa.Table) else [rows]
            i = 0
            for chunk in chunks:  # a branch's rows a chunk at a time, as Python values (no Series per row)
                for r in chunk[[c for c in COLUMNS_READ if c in chunk.columns]].to_dict("records"):
                    fields = {k: r[k] for k in FIELDS}
                    w.add(extra_images[source][i] if reader is None else reader.image(r), **fields, weight=per_sample)
                    i += 1
                progress.update(len(chunk))
            summary[source] = {"samples": len(rows), "mass": weights[source] / total}
        manifest = w.close()
        summary["checks"] = check_merged(p, manifest, len(classes(root)), out_dir(root, "validation") / "merge")
        write_json(tmp / "summary.json", summary)
    return summary
