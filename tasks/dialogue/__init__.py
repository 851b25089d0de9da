"""The dialogue stage: simulated multi-turn dialogues for a context-aware intent classifier (texts only).

On texts (`modality: text`, params `text.dialogue`) the stage lives in tasks/dialogue/text.py. On images
there is nothing to simulate: the stage writes an empty manifest, so the DAG and DVC have the same nodes for
both modalities.
"""

from __future__ import annotations

from pathlib import Path

from augdag.params import Params
from augdag.storage import atomic_dir, write_json, write_manifest
from augdag.tasks import out_dir


def run(p: Params, root: Path, **_) -> dict:
    summary = {"enabled": False, "dialogues": 0, "turns": 0, "note": "dialogue simulation is for texts"}
    with atomic_dir(out_dir(Path(root), "dialogue")) as tmp:
        write_manifest(tmp / "manifest.parquet", [])
        write_json(tmp / "summary.json", summary)
    return summary


def replay(root: Path, r: dict, params: Params | None = None) -> dict:
    from augdag.errors import LineageError

    raise LineageError(f"{r.get('sample_id')}: dialogue turns exist only in text runs (modality: text)")
