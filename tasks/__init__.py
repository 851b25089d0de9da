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
    import time

    from augdag.env import frozen_heap, release_free_memory

    text = getattr(params, "modality", "image") == "text" and name != "strategy"  # strategy serves both
    module = importlib.import_module("augdag.tasks.text" if text else f"augdag.tasks.{name}")
    t0 = time.monotonic()
    try:
        with frozen_heap():
            summary = module.run(name, params, Path(root)) if text else module.run(params, Path(root), **runtime)
    except BaseException as err:
        _record_timing(Path(root), name, time.monotonic() - t0, f"{type(err).__name__}: {err}")
        raise
    finally:
        release_free_memory()
    _record_timing(Path(root), name, time.monotonic() - t0, None)
    return summary


def _record_timing(root: Path, name: str, seconds: float, error: str | None) -> None:
    """data/validation/timings/<stage>.json for the report: ignored by git and DVC (not a stage output,
    so the outputs stay byte-identical between runs and routes)."""
    from augdag.errors import StorageError
    from augdag.storage import write_json

    folder = out_dir(root, "validation") / "timings"
    try:  # a record for the report: a full disk must not hide the stage's own error
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / f"{name}.json", {"seconds": round(seconds, 3), "ok": error is None, "error": error})
    except (OSError, StorageError):
        pass
