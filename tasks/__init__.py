"""Stage code: one module per node of the graph. Each exposes `run(params, root, **runtime) -> summary`.

The same functions are reached from `dvc repro` (through `augdag stage NAME`) and from the Prefect flow.
"""

from __future__ import annotations

from pathlib import Path

STAGES = ["ingest", "strategy", "traditional", "mix", "generative", "quality", "merge", "finetune", "evaluate", "report"]

UPSTREAM = {
    "ingest": [],
    "strategy": ["ingest"],
    "traditional": ["strategy"],
    "mix": ["strategy"],
    "generative": ["strategy"],
    "quality": ["traditional", "mix", "generative"],
    "merge": ["quality"],
    "finetune": ["merge"],
    "evaluate": ["finetune"],
    "report": ["evaluate"],
}


def out_dir(root: Path, stage: str) -> Path:
    return Path(root) / "data" / stage


def run_stage(name: str, params, root: Path, **runtime) -> dict:
    import importlib

    if name not in STAGES:
        from augdag.errors import AugdagError

        raise AugdagError(f"unknown stage {name!r}; stages are: {', '.join(STAGES)}")
    module = importlib.import_module(f"augdag.tasks.{name}")
    return module.run(params, Path(root), **runtime)
