"""One augdag command at a time per project: `augdag run` (and a run launched from `augdag server`)
and `augdag stage` hold an exclusive lock on the project while they run.

Runs share params.yaml (which `--set` rewrites) and data/, so a second command started meanwhile is
refused at once with the holder's pid, command and start time, before it writes anything. The lock
is an flock(2) on `.dvc/tmp/augdag.lock` (`.augdag.lock` in a folder without DVC): the kernel
releases it when the holder exits, however it exits (SIGKILL included), so a killed run never
leaves a stale lock. Reentrant within one process (the CLI takes it, then the flow it starts).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

from augdag.errors import RunLocked

_held: dict[str, list] = {}  # lock path -> [fd, depth]
_guard = threading.Lock()


def lock_path(root: str | Path) -> Path:
    root = Path(root).resolve()
    return root / ".dvc" / "tmp" / "augdag.lock" if (root / ".dvc").is_dir() else root / ".augdag.lock"


def holder(root: str | Path) -> dict | None:
    """What the lock file says about the last holder ({pid, command, since}), if readable."""
    try:
        data = json.loads(lock_path(root).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@contextlib.contextmanager
def hold(root: str | Path, command: str | None = None) -> Iterator[Path]:
    """Hold the project's run lock for the block; RunLocked if another process holds it."""
    path = lock_path(root)
    key = str(path)
    with _guard:
        if key in _held:
            _held[key][1] += 1
            fd = None
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunLocked(_refusal(root, path)) from None
            except BaseException:
                os.close(fd)
                raise
            info = {"pid": os.getpid(), "command": command or " ".join(["augdag", *sys.argv[1:]]),
                    "since": time.strftime("%Y-%m-%d %H:%M:%S")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            _held[key] = [fd, 1]
    try:
        yield path
    finally:
        with _guard:
            _held[key][1] -= 1
            if _held[key][1] == 0:
                os.close(_held.pop(key)[0])  # closing the descriptor releases the flock


def _refusal(root: str | Path, path: Path) -> str:
    h = holder(root) or {}
    who = (f"pid {h.get('pid')}, `{h.get('command')}`, since {h.get('since')}" if h.get("pid")
           else "another process")
    return (f"{Path(root).resolve()}: another augdag command is running on this project ({who}); runs share "
            f"params.yaml and data/, so this one was refused and changed nothing. Wait for it to finish, or use "
            f"another clone of the project. (Lock: {path})")
