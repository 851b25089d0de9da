"""augdag from Python: run the DAG, and take what it made into your own training code.

    import augdag

    project = augdag.open_project(".")
    project.run(finetune={"steps": 300})                 # the Prefect flow, as `augdag run --set` does
    merged = project.stage("merge")
    merged.manifest                                      # one row per sample: lineage, scores, weight
    loader = DataLoader(merged.dataset(), batch_size=64, sampler=merged.sampler(), num_workers=2)
    project.lineage("fmnist-train-16233~trad0"); project.replay("fmnist-train-16233~trad0")

Opening a project starts nothing and loads no torch: Prefect comes with `run`, torch with `dataset()`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from augdag.errors import AugdagError
from augdag.layout import out_dir

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from augdag.dataset import StageDataset
    from augdag.params import Params

def open_project(root: str | Path = ".") -> "Project":
    """The augdag project in `root` (the folder holding params.yaml and dvc.yaml). Sets the kernel caps of
    params' numerics section (augdag.numerics): call it before importing torch for the stages' bytes to be
    the `augdag` command's."""
    from augdag import numerics

    numerics.pin_from_params(root)
    return Project(root)


def run_flow(root: Path, set_params: list[str] | None = None, workers: int = 2, force: bool = False) -> dict:
    """The pipeline flow on the project in `root` with `--set KEY=VALUE` overrides, under the project's run lock,
    with Prefect's temporary server unless PREFECT_API_URL names one: what `augdag run` does."""
    from augdag import runlock
    from augdag.prefect_server import temporary_server

    overrides = list(set_params or [])
    with runlock.hold(root, " ".join(["augdag run", *(f"--set {o}" for o in overrides)])):
        with temporary_server() as server:  # boots while the flow's modules import
            from augdag.flows.pipeline import run_pipeline

            server.ready()
            return run_pipeline(str(root), set_params=overrides or None, workers=workers, force=force)


def dotted(overrides: dict[str, Any], prefix: str = "") -> list[str]:
    """`{"finetune": {"steps": 3}, "seed": 1}` (or `{"finetune.steps": 3}`) as `--set` strings:
    ["finetune.steps=3", "seed=1"]. Values are written as JSON, which params.yaml's parser reads as YAML."""
    out = []
    for key, value in overrides.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out += dotted(value, name + ".")
        else:
            out.append(f"{name}={json.dumps(value)}")
    return out


class Project:
    def __init__(self, root: str | Path = "."):
        self.root = Path(root).resolve()
        if not (self.root / "params.yaml").is_file():
            raise AugdagError(f"{self.root}: not an augdag project (no params.yaml); open the folder holding "
                              "params.yaml and dvc.yaml")

    def __repr__(self) -> str:
        return f"Project({str(self.root)!r})"

    @property
    def params(self) -> "Params":
        """params.yaml, parsed and validated."""
        from augdag.params import load_params

        return load_params(self.root / "params.yaml")

    def run(self, *, workers: int = 2, force: bool = False, **overrides: Any) -> dict:
        """Run the DAG through the Prefect flow. Keyword overrides are params sections, e.g.
        `run(finetune={"steps": 300}, seed=1)`; as `augdag run --set`, they are validated and written into
        params.yaml, so dvc.lock keeps matching the outputs. Returns each stage's summary."""
        return run_flow(self.root, dotted(overrides), workers=workers, force=force)

    def stage(self, name: str) -> "StageOutput":
        """What stage `name` wrote (data/<name>/)."""
        from augdag.tasks import STAGES

        if name not in STAGES:
            raise AugdagError(f"unknown stage {name!r}; stages are: {', '.join(STAGES)}")
        return StageOutput(self.root, name)

    def lineage(self, sample_id: str) -> list[dict]:
        """The sample, then its parents, back to the raw rows (what `augdag lineage` prints)."""
        from augdag import tasks

        return tasks.chain(self.root, sample_id)

    def replay(self, sample_id: str) -> dict:
        """Regenerate the sample from its parents and record; `match` says whether its content hash came back."""
        from augdag import tasks

        return tasks.replay(self.root, sample_id, self.params)


class StageOutput:
    """One stage's output folder: its manifest, and its samples as a torch Dataset."""

    def __init__(self, root: Path, name: str):
        self.root, self.name, self.folder = Path(root), name, out_dir(root, name)
        self._read: tuple | None = None  # (the manifest file's identity, its frame): read once per version

    def __repr__(self) -> str:
        return f"StageOutput({self.name!r}, {str(self.folder)!r})"

    @property
    def manifest(self) -> "pd.DataFrame":
        """One row per sample (manifest.parquet): ids, labels, lineage, scores, and `weight` after merge. Read once
        per version of the file and shared between calls: copy it before changing it."""
        from augdag.storage import MANIFEST, read_manifest

        try:
            st = (self.folder / MANIFEST).stat()
        except FileNotFoundError:
            raise AugdagError(f"{self.folder}: stage {self.name} has no manifest; run the pipeline first "
                              "(augdag run, or open_project(...).run())") from None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)  # a rerun publishes a new file
        if self._read is None or self._read[0] != key:
            self._read = (key, read_manifest(self.folder))
        return self._read[1]

    def classes(self) -> list[str]:
        """The class names ingest recorded."""
        from augdag.layout import classes

        return classes(self.root)

    def dataset(self, transform: Callable | None = None, split: str | None = None,
                labels: str = "auto") -> "StageDataset":
        """The stage's samples as a `torch.utils.data.Dataset` (see StageDataset), optionally one split only."""
        m = self.manifest
        if split is not None:
            if split not in set(m["split"]):
                raise AugdagError(f"stage {self.name} has no {split!r} rows; its splits: {sorted(set(m['split']))}")
            m = m[m["split"] == split].reset_index(drop=True)
        from augdag.dataset import StageDataset

        return StageDataset(self.folder, m, len(self.classes()), transform=transform, labels=labels)

    def weights(self, split: str | None = None) -> np.ndarray:
        """Each row's sampling weight: merge's `weight` column, 1 where a row has none."""
        from augdag.storage import sample_weights

        m = self.manifest
        if split is not None:
            m = m[m["split"] == split]
        return sample_weights(m["weight"])

    def sampler(self, num_samples: int | None = None, replacement: bool = True, generator=None,
                split: str | None = None):
        """A `WeightedRandomSampler` drawing rows of `dataset(split=split)` with the merge weights."""
        import torch

        w = self.weights(split)
        if len(w) == 0:
            raise AugdagError(f"stage {self.name} has no rows to sample")
        return torch.utils.data.WeightedRandomSampler(torch.as_tensor(w, dtype=torch.double),
                                                      num_samples or len(w), replacement=replacement,
                                                      generator=generator)

    def export(self, fmt: str, out: str | Path, overwrite: bool = False) -> dict:
        """Write the stage's samples in a format other tools train from (see augdag.export)."""
        from augdag.export import export

        return export(self.root, self.name, fmt, out, overwrite=overwrite)
