"""Where a project keeps things on disk: each stage's output folder, and the expectation suites."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _expectations() -> Path:
    checkout = Path(__file__).resolve().parent.parent / "expectations"
    if checkout.is_dir():  # a checkout or an editable install: the repository's own expectations/
        return checkout
    spec = importlib.util.find_spec("augdag.expectations")  # a wheel ships them as package data (a namespace package)
    return Path(list(spec.submodule_search_locations)[0]) if spec else checkout


EXPECTATIONS = _expectations()


def classes(root: str | Path) -> list[str]:
    """The class names ingest recorded (data/ingest/classes.json); DataError naming the file when it is missing
    or malformed."""
    from augdag.errors import DataError
    from augdag.storage import load_json

    path = out_dir(root, "ingest") / "classes.json"
    data = load_json(path, "the class list")
    names = data.get("classes") if isinstance(data, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(c, str) for c in names):
        raise DataError(f"{path}: expected {{\"classes\": [names...]}}")
    return names


def cycle_dir(root: str | Path) -> Path:
    """The crossdomain branch's cycle reconstructions F(G(a)), each at the shard and index of its sample."""
    return out_dir(root, "crossdomain") / "cycle"


def out_dir(root: str | Path, stage: str) -> Path:
    """The output folder of `stage` in the project at `root` (data/<stage>, as dvc.yaml declares it)."""
    return Path(root) / "data" / stage
