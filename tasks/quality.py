"""Quality gate: validates each branch manifest and records a keep/drop decision per sample.

This version checks each branch manifest against expectations/branch.json (schema, labels,
lineage fields); the per-sample quality checks (PSNR/SSIM, label consistency, outlier filter)
come with the quality-gate issue. Rows point at their branch's shards; nothing is copied here.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from augdag import gx
from augdag.log import logger
from augdag.params import BRANCHES, Params
from augdag.storage import atomic_dir, read_manifest, write_json, write_manifest
from augdag.tasks import out_dir
from augdag.tasks.ingest import EXPECTATIONS, classes


def run(p: Params, root: Path, **_) -> dict:
    label_set = list(range(len(classes(root))))
    results = out_dir(root, "validation") / "quality"
    results.mkdir(parents=True, exist_ok=True)
    kept, rejected, summary = [], [], {}
    for branch in BRANCHES:
        m = read_manifest(out_dir(root, branch))
        if len(m):
            report = gx.validate_frame(m, EXPECTATIONS / "branch.json", {"label_set": label_set},
                                       results_path=results / f"{branch}.json")
            if not report.success:
                if p.quality.on_schema_failure == "fail":
                    gx.require(report)
                logger().warning("%s", report.message())
        m = m.assign(gate="kept", gate_reason="")
        kept.append(m)
        summary[branch] = {"in": len(m), "kept": len(m), "dropped": 0}
    with atomic_dir(out_dir(root, "quality")) as tmp:
        write_manifest(tmp / "manifest.parquet", pd.concat(kept, ignore_index=True))
        write_manifest(tmp / "rejected.parquet", rejected)
        write_json(tmp / "summary.json", summary)
    return summary
