"""augdag: a workflow-orchestrated, quality-gated data-augmentation DAG for fine-tuning.

`augdag.open_project(root)` is the Python API (augdag.api); importing augdag loads neither torch nor Prefect.
"""

from augdag.env import set_offline

set_offline()  # before any hub client is imported: nothing is downloaded at run time

__version__ = "0.1.0"
__all__ = ["Project", "StageDataset", "StageOutput", "open_project"]


def __getattr__(name: str):
    if name in __all__:  # imported when asked for: the Dataset brings torch
        import importlib

        return getattr(importlib.import_module("augdag.dataset" if name == "StageDataset" else "augdag.api"), name)
    raise AttributeError(f"module 'augdag' has no attribute {name!r}")
