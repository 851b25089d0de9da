"""Generative branch: disabled in params until its implementation lands; writes an empty, valid output."""

from __future__ import annotations

from pathlib import Path

from augdag.params import Params
from augdag.tasks._disabled import empty_branch


def run(p: Params, root: Path, **_) -> dict:
    return empty_branch(root, "generative")
