"""Fault injection points, for the tests that kill or pause a real process at a chosen moment.

`AUGDAG_FAULT="POINT[#N]=ACTION[,...]"` makes the process send itself a real signal the N-th time
(default the first) it reaches POINT: ACTION `kill` is SIGKILL, `stop` is SIGSTOP (the test sends
SIGCONT). Points, each named after the stage output folder being written:

- `write:<stage>`: a file was written completely into the stage's temporary folder;
- `publish:<stage>`: the temporary folder is complete, not yet renamed into place;
- `swap:<stage>`: the fallback publish (no atomic exchange) moved the last output aside, the new one
  is not yet in place.

Unset (the normal case), each point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

ENV = "AUGDAG_FAULT"
_TMP = re.compile(r"^\.(?P<stage>.+)\.tmp-\d+$")
_hits: dict[str, int] = {}


def point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    _hits[name] = count = _hits.get(name, 0) + 1
    for item in spec.split(","):
        where, _, action = item.strip().partition("=")
        target, _, nth = where.partition("#")
        if target == name and count == int(nth or 1):
            os.kill(os.getpid(), signal.SIGSTOP if action == "stop" else signal.SIGKILL)


def wrote(path: str | Path) -> None:
    """`write:<stage>` when `path` lies in a stage's temporary folder (atomic_dir's `.NAME.tmp-PID`)."""
    if not os.environ.get(ENV):
        return
    for parent in Path(path).parents:
        m = _TMP.match(parent.name)
        if m:
            point(f"write:{m['stage']}")
            return
