"""Strategy: which branches run and how many variants each makes; one plan file per branch.

Each branch depends only on its own plan file, so switching one branch on or off leaves the
others' DVC cache untouched.
"""

from __future__ import annotations

from pathlib import Path

from augdag.errors import DataError
from augdag.params import BRANCHES, Params
from augdag.storage import atomic_dir, load_json, read_manifest, write_json
from augdag.tasks import out_dir


def run(p: Params, root: Path, **_) -> dict:
    manifest = read_manifest(out_dir(root, "ingest"))
    parents = manifest.loc[manifest.split == "train", "sample_id"].tolist()
    summary = {}
    with atomic_dir(out_dir(root, "strategy")) as tmp:
        for branch in BRANCHES:
            plan = getattr(p.strategy, branch)
            n = len(parents) * plan.multiplier if plan.enabled else 0
            write_json(tmp / f"{branch}.json", {
                "branch": branch, "enabled": plan.enabled, "multiplier": plan.multiplier,
                "parents": parents if plan.enabled else [], "planned_samples": n,
            })
            summary[branch] = n
        write_json(tmp / "summary.json", summary)
    return summary


def load_plan(root: Path, branch: str) -> dict:
    path = out_dir(root, "strategy") / f"{branch}.json"
    plan = load_json(path, f"the {branch} plan")
    if not isinstance(plan, dict) or not {"enabled", "multiplier", "parents"} <= set(plan):
        raise DataError(f"{path}: not a strategy plan (needs enabled, multiplier, parents)")
    return plan
