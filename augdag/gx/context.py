"""The one ephemeral Great Expectations context of a process, and the lock all GE work runs under.

Creating a context is slow, so there is one per process (re-made in a forked child), with a pandas data
source, one dataframe asset and a whole-dataframe batch definition. GE is not thread-safe; every call into it
holds ``lock()``. Great Expectations itself is imported lazily: importing it takes seconds.
"""

from __future__ import annotations

import os
import threading
from typing import Any

# Keep GE quiet and offline. GX 1.x reads GX_ANALYTICS_ENABLED when a context is created;
# set it before great_expectations is first imported.
os.environ["GX_ANALYTICS_ENABLED"] = "false"

_LOCK = threading.RLock()
_STATE: dict[str, Any] = {}  # pid, context, batch_definition


def _reset_after_fork() -> None:
    # A child forked while another thread held the lock would otherwise deadlock.
    global _LOCK
    _LOCK = threading.RLock()
    _STATE.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def lock() -> threading.RLock:
    """The process's GE lock (a fresh one in a forked child)."""
    return _LOCK


def _ensure() -> None:
    if _STATE.get("pid") == os.getpid():
        return
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # No tqdm "Calculating Metrics" bars on stderr.
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("augdag").add_dataframe_asset("manifest")
    batch_definition = asset.add_batch_definition_whole_dataframe("whole_frame")
    _STATE.update(pid=os.getpid(), context=context, batch_definition=batch_definition)


def batch_definition():
    """The whole-dataframe batch definition of this process's context. Call with the lock held."""
    _ensure()
    return _STATE["batch_definition"]


def current() -> Any | None:
    """This process's context, if it made one (to give back GE's "current context" after another was made)."""
    return _STATE.get("context") if _STATE.get("pid") == os.getpid() else None
