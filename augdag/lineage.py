"""Per-sample lineage: find a sample in the stage manifests and walk its ancestry back to the raw rows.

Replaying a sample is the stage's own business (each stage package under tasks/ has a `replay`); the stages
that produce samples, and the order they are searched in, are the caller's (augdag.tasks.find and chain pass
the DAG's).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from augdag.errors import LineageError
from augdag.layout import out_dir
from augdag.storage import MANIFEST, read_table, to_frame, try_read_json


def find(root: Path, sample_id: str, stages: Sequence[str]) -> tuple[str, dict]:
    """(stage, manifest row) of a sample, searching the manifests of `stages` in order; LineageError if none
    holds it."""
    searched = []
    for stage in stages:
        path = out_dir(root, stage) / MANIFEST
        if not path.exists():
            continue
        searched.append(stage)
        hit = to_frame(read_table(path, filters=[("sample_id", "=", sample_id)]))
        if len(hit):
            return stage, _row(hit.iloc[0])
    if not searched:
        raise LineageError(f"no stage outputs under {out_dir(root, '')}: run the pipeline first (augdag run)")
    raise LineageError(f"sample {sample_id!r} not found in the manifests of: {', '.join(searched)}")


def _row(r) -> dict:
    d = {}
    for k, v in r.items():
        if hasattr(v, "tolist"):
            v = v.tolist()
        d[k] = None if v is None or (isinstance(v, float) and v != v) or str(v) == "<NA>" else v
    d["op_params"] = json.loads(d["op_params"]) if d.get("op_params") else {}
    return d


def _device(root: Path, stage: str) -> dict:
    """{"device": ...} of a stage that computed with a model (its summary says where), else {}."""
    summary = try_read_json(out_dir(root, stage) / "summary.json")
    return {"device": summary["device"]} if isinstance(summary, dict) and "device" in summary else {}


def chain(root: Path, sample_id: str, stages: Sequence[str]) -> list[dict]:
    """The sample, then its parents, back to the raw rows (breadth first); a sample made by a model carries the
    device it was made on."""
    out, frontier, seen, devices = [], [sample_id], set(), {}
    while frontier:
        sid = frontier.pop(0)
        if sid in seen:
            continue
        seen.add(sid)
        stage, r = find(root, sid, stages)
        out.append({"stage": stage, **{k: r[k] for k in ("sample_id", "branch", "label", "soft_label", "parent_ids",
                                                          "source", "op_params", "seed", "content_hash", "gate")},
                    **({"text": r["text"]} if r.get("text") is not None else {}),
                    **devices.setdefault(stage, _device(root, stage))})
        frontier.extend(r["parent_ids"] or [])
    return out
