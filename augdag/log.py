"""One logger for stage code: Prefect's run logger inside a flow run (so logs reach the UI), else stdlib."""

from __future__ import annotations

import logging
import sys

_std = logging.getLogger("augdag")
if not _std.handlers:
    _h = logging.StreamHandler(sys.stderr)
    _h.setFormatter(logging.Formatter("%(asctime)s augdag %(levelname)s %(message)s", "%H:%M:%S"))
    _std.addHandler(_h)
    _std.setLevel(logging.INFO)
    _std.propagate = False


def logger():
    try:
        from prefect.context import TaskRunContext, FlowRunContext
        from prefect.logging import get_run_logger

        if TaskRunContext.get() or FlowRunContext.get():
            return get_run_logger()
    except Exception:  # prefect missing or no context: plain logging
        pass
    return _std


class Progress:
    """Logs 'stage: done/total (pct)' at most every `every` percent; cheap enough for hot loops."""

    def __init__(self, stage: str, total: int, every: float = 10.0):
        self.stage, self.total = stage, max(total, 1)
        self.every = every if total >= 1000 else 100.0  # small jobs: one line at the end
        self.done, self._next = 0, every

    def update(self, n: int = 1) -> None:
        self.done += n
        pct = 100.0 * self.done / self.total
        if pct >= self._next or self.done == self.total:
            logger().info("%s: %d/%d (%.0f%%)", self.stage, self.done, self.total, pct)
            while self._next <= pct:
                self._next += self.every
