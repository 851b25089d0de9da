"""The DAG's stages: one package (or module) per node of the graph, declared here once.

Each stage package `augdag.tasks.<name>` holds the stage on images in its `__init__` and on texts in its
`text` module, each with `run(params, root, **runtime) -> summary`; the stages that produce samples also
have `replay(root, row, params) -> {"replayed_hash", ...}`. The same `run` is reached from `dvc repro`
(dvc.yaml's `augdag stage NAME`) and from the Prefect flow; tests/test_dag.py checks dvc.yaml against
`DAG` and every stage's code deps against what it imports.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from augdag.layout import EXPECTATIONS, out_dir

__all__ = ["DAG", "EXPECTATIONS", "SAMPLE_STAGES", "STAGES", "UPSTREAM", "Stage", "chain", "find", "is_text_run",
           "module", "out_dir", "replay", "run_modality", "run_stage"]


@dataclass(frozen=True)
class Stage:
    name: str
    upstream: tuple[str, ...]  # the stages whose outputs it reads first-hand (earlier ones it may read too)
    samples: bool = False  # its manifest holds samples of its own (lineage searches these, in DAG order)
    text: bool = True  # it has a text version (tasks/<name>/text.py); strategy serves both modalities
    audio: bool = False  # it has an audio version (tasks/<name>/audio.py); else audio runs the image code on
    # the clips' spectrograms


DAG: tuple[Stage, ...] = (
    Stage("ingest", (), samples=True, audio=True),
    Stage("strategy", ("ingest",), text=False),
    Stage("traditional", ("strategy",), samples=True, audio=True),
    Stage("mix", ("strategy",), samples=True),
    Stage("generative", ("strategy",), samples=True),
    Stage("crossdomain", ("strategy",), samples=True, text=False),
    Stage("quality", ("traditional", "mix", "generative", "crossdomain"), audio=True),
    Stage("merge", ("quality",)),
    Stage("dialogue", ("merge",), samples=True),  # simulated dialogues (texts; an empty output on images)
    Stage("finetune", ("merge", "dialogue")),
    Stage("evaluate", ("finetune",)),
    Stage("report", ("evaluate",), audio=True),
)
BY_NAME = {s.name: s for s in DAG}
STAGES = [s.name for s in DAG]
UPSTREAM = {s.name: list(s.upstream) for s in DAG}
SAMPLE_STAGES = tuple(s.name for s in DAG if s.samples)


def _stage(name: str) -> Stage:
    if name not in BY_NAME:
        from augdag.errors import AugdagError

        raise AugdagError(f"unknown stage {name!r}; stages are: {', '.join(STAGES)}")
    return BY_NAME[name]


# What the text and audio stages import: the `text` and `audio` extras (make setup installs them).
EXTRAS = {"text": ("nltk", "spacy", "sentencepiece"), "audio": ("soundfile", "librosa")}


def module(name: str, modality: str = "image") -> ModuleType:
    """The code of stage `name` for `modality` (image, text or audio)."""
    stage = _stage(name)
    own = (modality == "text" and stage.text) or (modality == "audio" and stage.audio)
    if own:
        missing = [m for m in EXTRAS[modality] if importlib.util.find_spec(m) is None]
        if missing:
            from augdag.errors import AugdagError

            raise AugdagError(f"modality: {modality} needs the {modality} extra, and {', '.join(missing)} is not "
                              f"installed: pip install 'augdag[{modality}]' (make setup installs it)")
    return importlib.import_module(f"augdag.tasks.{name}" + (f".{modality}" if own else ""))


def run_stage(name: str, params, root: Path, **runtime) -> dict:
    import time

    from augdag import cancel
    from augdag.env import frozen_heap, release_free_memory

    cancel.check()
    code = module(name, getattr(params, "modality", "image"))
    runtime["mapper"] = cancel.cancellable(runtime.get("mapper") or map)
    numerics = getattr(params, "numerics", None)
    if numerics is not None:  # float results depend on the thread count; stages that set their own still do
        import torch

        from augdag import numerics as kernels

        kernels.check(params)
        torch.set_num_threads(numerics.threads)
    t0 = time.monotonic()
    try:
        with frozen_heap():
            summary = code.run(params, Path(root), **runtime)
    except BaseException as err:
        _record_timing(Path(root), name, time.monotonic() - t0, f"{type(err).__name__}: {err}")
        raise
    finally:
        release_free_memory()
    _record_timing(Path(root), name, time.monotonic() - t0, None)
    return summary


def find(root: Path, sample_id: str) -> tuple[str, dict]:
    """(stage, manifest row) of a sample in the outputs of the stages that produce samples."""
    from augdag import lineage

    return lineage.find(root, sample_id, SAMPLE_STAGES)


def chain(root: Path, sample_id: str) -> list[dict]:
    """The sample, then its parents, back to the raw rows."""
    from augdag import lineage

    return lineage.chain(root, sample_id, SAMPLE_STAGES)


def replay(root: Path, sample_id: str, params=None) -> dict:
    """Regenerate a sample through its stage's `replay` and compare three hashes: the one recorded in the
    manifest, the stored sample's (read back from its shard, or its text), the regenerated one's; `match` only
    when all agree. With `params`, also re-draw its record from its seed and say whether the current params
    draw the same one."""
    stage, r = find(root, sample_id)
    modality = run_modality(root)
    text = modality == "text"
    result = {"sample_id": sample_id, "stage": stage, "recorded_hash": r["content_hash"]}
    if not text:
        from augdag.storage import StageData, content_hash

        result["stored_hash"] = content_hash(StageData(out_dir(root, stage), manifest=False).image(r))
    result.update(module(stage, modality).replay(root, r, params))
    result["match"] = result["replayed_hash"] == result["recorded_hash"] == result.get("stored_hash",
                                                                                        result["recorded_hash"])
    return result


def run_modality(root: Path) -> str:
    """What the project's ingest output holds: image, text or audio (its summary says so)."""
    from augdag.storage import try_read_json

    return (try_read_json(out_dir(root, "ingest") / "summary.json") or {}).get("modality", "image")


def is_text_run(root: Path) -> bool:
    """Whether the project's ingest output holds texts."""
    return run_modality(root) == "text"


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
