"""The merge stage on texts (params `modality: text`, settings in `text.merge`)."""


from __future__ import annotations

from pathlib import Path

import pandas as pd

from augdag.errors import DataError, ParamsError
from augdag.layout import classes
from augdag.params import Params
from augdag.storage import atomic_dir, read_manifest, write_json, write_manifest
from augdag.tasks import out_dir
from augdag.tasks._text import _raw


def merge(p: Params, root: Path) -> dict:
    from augdag.tasks.merge import check_merged

    if p.merge.extra_sources:
        raise ParamsError("params.yaml: merge.extra_sources adds image folders; with modality text it must be {} "
                          f"(got {sorted(p.merge.extra_sources)})")
    raw = _raw(root)
    gate = read_manifest(out_dir(root, "quality"))
    parts = {"raw": raw[raw.split == "train"]}
    for branch, rows in gate[gate.gate == "kept"].groupby("branch", sort=False):
        parts[branch] = rows
    weights = {s: p.merge.weights.get(s, 1.0) for s in parts if len(parts[s]) and p.merge.weights.get(s, 1.0) > 0}
    if not weights:
        raise DataError("merge: no samples left (every source is empty or has weight 0 in merge.weights)")
    total = sum(weights.values())
    frames, summary = [], {}
    for source in weights:
        rows = parts[source].copy()
        rows["weight"] = weights[source] / total / len(rows)
        frames.append(rows)
        summary[source] = {"samples": len(rows), "mass": weights[source] / total}
    manifest = pd.concat(frames, ignore_index=True)
    with atomic_dir(out_dir(root, "merge")) as tmp:
        write_manifest(tmp / "manifest.parquet", manifest)
        summary["checks"] = check_merged(p, tmp / "manifest.parquet", len(classes(root)),
                                         out_dir(root, "validation") / "merge")
        write_json(tmp / "summary.json", summary)
    return summary


def run(p: Params, root: Path, **_) -> dict:
    return merge(p, Path(root))
