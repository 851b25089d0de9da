"""Shared body of a branch whose implementation is not in yet: an empty, valid output."""

from __future__ import annotations

from pathlib import Path

from augdag.errors import ParamsError
from augdag.storage import StageWriter, atomic_dir, write_json
from augdag.tasks import out_dir
from augdag.tasks.strategy import load_plan


def empty_branch(root: Path, branch: str) -> dict:
    plan = load_plan(root, branch)
    if plan["enabled"]:
        raise ParamsError(f"params.yaml: strategy.{branch}.enabled = true, but the {branch} branch is not "
                          f"implemented in this version; set strategy.{branch}.enabled: false")
    with atomic_dir(out_dir(root, branch)) as tmp:
        StageWriter(tmp).close()
        summary = {"enabled": False, "samples": 0}
        write_json(tmp / "summary.json", summary)
    return summary
