"""One logger for stage code: Prefect's run logger inside a flow run (so logs reach the UI), else stdlib."""

from __future__ import annotations

import logging
import sys

from augdag import cancel

_std = logging.getLogger("augdag")
if not _std.handlers:
    _h = logging.StreamHandler(sys.stderr)
    _h.setFormatter(logging.Formatter("%(asctime)s augdag %(levelname)s %(message)s", "%H:%M:%S"))
    _std.addHandler(_h)
    _std.setLevel(logging.INFO)
    _std.propagate = False


def logger():
    try:
        from prefect.context import FlowRunContext, TaskRunContext
        from prefect.logging import get_run_logger

        if TaskRunContext.get() or FlowRunContext.get():
            return get_run_logger()
    except Exception:  # prefect missing or no context: plain logging
        pass
    return _std


class Progress:
    """Logs 'stage: done/total (pct)' at most every `every` percent, and inside a Prefect run keeps a
    progress artifact (key augdag-<stage>-progress) at the same pace; cheap enough for hot loops.
    Jobs smaller than `quiet_below` log one line at the end."""

    def __init__(self, stage: str, total: int, every: float = 10.0, quiet_below: int = 1000):
        self.stage, self.total = stage, max(total, 1)
        self.every = every if total >= quiet_below else 100.0
        self.done, self._next = 0, self.every
        self._artifact = _progress_artifact(stage)

    def update(self, n: int = 1) -> None:
        cancel.check()  # long loops report progress: Ctrl-C stops them here
        self.done += n
        pct = 100.0 * self.done / self.total
        if pct >= self._next or self.done == self.total:
            logger().info("%s: %d/%d (%.0f%%)", self.stage, self.done, self.total, pct)
            if self._artifact is not None:
                try:
                    from prefect.artifacts import update_progress_artifact

                    update_progress_artifact(self._artifact, min(pct, 100.0))
                except Exception:  # the UI's progress bar is a nicety; never fail a stage over it
                    self._artifact = None
            while self._next <= pct:
                self._next += self.every


def _progress_artifact(stage: str):
    """A Prefect progress artifact when running inside a flow or task run, else None."""
    try:
        from prefect.artifacts import create_progress_artifact
        from prefect.context import FlowRunContext, TaskRunContext

        if not (TaskRunContext.get() or FlowRunContext.get()):
            return None
        key = "augdag-" + "".join(c if c.isalnum() else "-" for c in stage.lower()) + "-progress"
        return create_progress_artifact(0.0, key=key, description=f"augdag {stage}: progress")
    except Exception:
        return None
