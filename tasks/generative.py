"""Generative branch: disabled in params until its implementation lands; writes an empty, valid output."""

from __future__ import annotations

from pathlib import Path

from augdag.errors import ParamsError
from augdag.params import Params
from augdag.storage import StageWriter, atomic_dir, write_json
from augdag.tasks import out_dir
from augdag.tasks.strategy import load_plan


def run(p: Params, root: Path, **_) -> dict:
    if load_plan(root, "generative")["enabled"]:
        raise ParamsError("params.yaml: strategy.generative.enabled = true, but the generative branch is not "
                          "implemented in this version; set strategy.generative.enabled: false")
    with atomic_dir(out_dir(root, "generative")) as tmp:
        StageWriter(tmp).close()
        summary = {"enabled": False, "samples": 0}
        write_json(tmp / "summary.json", summary)
    return summary
