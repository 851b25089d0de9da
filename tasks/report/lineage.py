"""The lineage view's index: samples and their ancestors, inlined as JSON for static/lineage.js to search."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import numpy as np
from markupsafe import Markup

from augdag.storage import MANIFEST, StageData, read_manifest
from augdag.tasks import out_dir

from .figures import png
from .sections import Missing, classes
from .templating import static

# The lineage index holds up to this many merged samples (taken round robin over the sources, so every
# branch is searchable), up to LINEAGE_REJECTED gate-rejected ones, and all their ancestors. A module
# constant, not a param: params.py has no key for it.
LINEAGE_SAMPLES = 400
LINEAGE_REJECTED = 50
# where a sample is produced (augdag.lineage's order)
ORIGIN = ["ingest", "traditional", "mix", "generative", "crossdomain"]


def frag(sample_id: str) -> str:
    """The URL fragment value of a sample id (what the lineage script's decodeURIComponent reads back)."""
    return quote(sample_id, safe="~-._!*'()")


def plain(v):
    """JSON-safe, and integers beyond 2**53 as strings (JavaScript numbers would round 63-bit seeds)."""
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [plain(x) for x in v]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v) if abs(int(v)) <= 2 ** 53 else str(int(v))
    if isinstance(v, (float, np.floating)):
        return None if v != v else float(v)
    return v


def _opt(v):
    return None if v is None or v is np.nan or (isinstance(v, float) and v != v) or str(v) in ("<NA>", "nan") else v


def script_json(obj) -> Markup:
    """JSON that cannot end the <script> element it sits in."""
    return Markup(json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
                  .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def lineage_index(root: Path) -> dict:
    """Merged samples (up to LINEAGE_SAMPLES, round robin over sources), rejected ones (up to LINEAGE_REJECTED),
    and all their ancestors: id, stage, branch, label, parents, op params, gate decision and scores, thumbnail."""
    stores: dict[str, StageData] = {}
    where: dict[str, tuple[str, int]] = {}
    for s in ORIGIN + ["merge"]:
        if (out_dir(root, s) / MANIFEST).exists():
            stores[s] = StageData(out_dir(root, s))
            for i, sid in enumerate(stores[s].manifest.sample_id):
                where.setdefault(sid, (s, i))  # the producing stage first; merge only for extra sources
    gate: dict[str, tuple] = {}
    rejected = None
    qfolder = out_dir(root, "quality")
    for name in (MANIFEST, "rejected.parquet"):
        if (qfolder / name).exists():
            q = read_manifest(qfolder, name)
            gate.update(zip(q.sample_id, zip(q.gate, q.gate_reason, q.scores)))
            if name != MANIFEST:
                rejected = q
    merged = stores["merge"].manifest if "merge" in stores else None
    weight = dict(zip(merged.sample_id, merged.weight)) if merged is not None else {}

    def round_robin(frame, cap):
        if frame is None or not len(frame):
            return []
        groups = [list(g.sample_id) for _, g in frame.groupby("branch", sort=False)]
        out = []
        for k in range(max(len(g) for g in groups)):
            out.extend(g[k] for g in groups if k < len(g))
        return out[:cap]

    picked_merged, picked_rejected = round_robin(merged, LINEAGE_SAMPLES), round_robin(rejected, LINEAGE_REJECTED)
    picked = picked_merged + picked_rejected
    samples: dict[str, dict] = {}
    frontier = list(picked)
    while frontier:
        sid = frontier.pop(0)
        if sid in samples or sid not in where:
            continue
        stage, i = where[sid]
        data = stores[stage]
        r = data.manifest.iloc[i]
        g = gate.get(sid)
        scores = _opt(g[2]) if g else _opt(r.scores)
        parents = [str(x) for x in (r.parent_ids if r.parent_ids is not None else [])]
        e = {"stage": stage, "branch": r.branch, "split": r.split, "label": int(r.label),
             "parents": parents, "params": json.loads(_opt(r.op_params) or "{}"),
             "gate": (_opt(g[0]) if g else _opt(r.gate)) or ("raw, not gated" if r.branch == "raw" else None),
             "reason": (_opt(g[1]) if g else _opt(r.gate_reason)) or None,
             "scores": json.loads(scores) if scores else None, "source": _opt(r.source),
             "hash": str(r.content_hash)[:16], "img": png(data.image(r))}
        if _opt(r.seed) is not None:
            e["seed"] = str(int(r.seed))
        if r.soft_label is not None and len(r.soft_label):
            e["soft"] = [round(float(x), 4) for x in r.soft_label]
        if sid in weight:
            e["weight"] = float(weight[sid])
        samples[sid] = plain(e)
        frontier.extend(parents)
    n_rej = len(rejected) if rejected is not None else 0
    return {"classes": classes(root) or [], "samples": samples,
            "merged_total": len(merged) if merged is not None else 0,
            "merged_indexed": sum(s in samples for s in picked_merged),
            "rejected_total": n_rej, "rejected_indexed": sum(s in samples for s in picked_rejected),
            "examples": {b: ids[0] for b, ids in _first_per_branch(picked, samples).items()}}


def _first_per_branch(ids: list[str], samples: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for sid in ids:
        if sid in samples:
            out.setdefault(samples[sid]["branch"], []).append(sid)
    return out


def section(index: dict | None, error: str | None) -> dict | Missing:
    """The lineage section (templates/sections/lineage.html.j2): the search box, the index, static/lineage.js."""
    if error:
        return {"error": error}
    if index is None or not index["samples"]:
        return Missing("run the pipeline (the lineage index is built from the stage outputs)")
    return {"error": None, "index": index, "caps": (LINEAGE_SAMPLES, LINEAGE_REJECTED),
            "placeholder": next(iter(index["examples"].values()), ""), "script": static("lineage.js")}
