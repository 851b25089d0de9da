"""Merge: raw train samples plus the gate's kept samples, each with a sampling weight.

`merge.weights[source]` is the probability mass of that source when the fine-tune draws a sample:
a sample's weight is weights[source] / (number of samples of that source), normalised to sum to 1
over the non-empty sources. A weight of 0 leaves the source out.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from augdag import gate, gx
from augdag.errors import DataError
from augdag.log import Progress, logger
from augdag.params import Params
from augdag.storage import StageData, StageWriter, atomic_dir, read_manifest, write_json
from augdag.tasks import out_dir
from augdag.tasks.ingest import EXPECTATIONS, classes


def check_merged(p: Params, manifest: pd.DataFrame, n_classes: int, results: Path) -> dict:
    """expectations/merged.json on the merged manifest and merged_classes.json on its per-class mass."""
    results.mkdir(parents=True, exist_ok=True)
    frame = manifest.assign(
        augmented=(manifest.branch != "raw").astype(int),
        soft_label_sum=gate.soft_label_sum(manifest.soft_label))
    lo, hi = p.merge.augmented_share
    label_set = list(range(n_classes))
    modes = p.quality.modes
    checks = {}
    merged = gx.gate_frame(frame, EXPECTATIONS / "merged.json",
                           {"label_set": label_set, "augmented_min": lo, "augmented_max": hi},
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


def run(p: Params, root: Path, **_) -> dict:
    raw = StageData(out_dir(root, "ingest"))
    gate = read_manifest(out_dir(root, "quality"))
    parts = {"raw": raw.manifest[raw.manifest.split == "train"]}
    for branch, rows in gate[gate.gate == "kept"].groupby("branch", sort=False):
        parts[branch] = rows
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
            reader = raw if source == "raw" else StageData(out_dir(root, source))
            per_sample = weights[source] / total / len(rows)
            for _, r in rows.iterrows():
                fields = {k: r[k] for k in ("sample_id", "split", "branch", "label", "soft_label", "parent_ids", "source",
                                            "op_params", "seed", "generator_hash", "scores", "gate", "gate_reason")}
                w.add(reader.image(r), **fields, weight=per_sample)
            progress.update(len(rows))
            summary[source] = {"samples": len(rows), "mass": weights[source] / total}
        manifest = w.close()
        summary["checks"] = check_merged(p, manifest, len(classes(root)), out_dir(root, "validation") / "merge")
        write_json(tmp / "summary.json", summary)
    return summary
