"""Training curves and final metrics through DVCLive, so `dvc exp show`, `dvc metrics` and `dvc plots` read them
as DVC's own logger writes them (dvc.yaml declares the files; DVCLive writes no dvc.yaml or experiment of its own).

Values are logged without timestamps, so the files are the same bytes run to run.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable

CURVE_DIR = "dvclive"  # in data/finetune: metrics.json (the last point) and plots/metrics/<name>.tsv


def _live(folder: Path):
    from dvclive import Live

    class FilesOnly(Live):
        # DVCLive's repo hooks (experiments, Studio, dvc.yaml) are off here, but it still opens the Git repo and
        # fails in one without commits (scmrepo "Empty git repo"); the files need none of it.
        def _init_dvc(self):
            self._dvc_file = "dvc.yaml"

    return FilesOnly(dir=str(folder), report=None, save_dvc_exp=False, dvcyaml=False)


def log_curve(folder: str | Path, curve: Iterable[dict]) -> None:
    """Points {"step": s, name: value, ...} (names may differ point to point) as DVCLive steps under `folder`."""
    with _live(Path(folder)) as live:
        for point in curve:
            live.step = int(point["step"])
            for name, value in point.items():
                if name != "step" and value is not None:
                    live.log_metric(name, value)
            live.next_step()


def log_metrics(folder: str | Path, metrics: dict) -> None:
    """`folder`/metrics.json holding `metrics` as DVCLive's summary (set whole, as its docs allow, so that keys
    with '/' such as the class 'T-shirt/top' are not split into nested names)."""
    with _live(Path(folder)) as live:
        live.summary.update(metrics)


def read_curve(folder: str | Path) -> list[dict]:
    """The points `log_curve` wrote under `folder`, merged by step ([] when there are none)."""
    plots = Path(folder) / "plots" / "metrics"
    points: dict[int, dict] = {}
    for path in sorted(plots.glob("*.tsv")) if plots.is_dir() else []:
        with open(path, newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                step = int(row.pop("step"))
                points.setdefault(step, {"step": step}).update({k: float(v) for k, v in row.items()})
    return [points[s] for s in sorted(points)]
