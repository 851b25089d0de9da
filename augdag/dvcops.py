"""What the Prefect flow asks DVC: is a stage up to date, and record a stage it ran in dvc.lock.

Calls are serialised: DVC holds a repo-wide lock, and the flow runs branches in threads. DVC
resolves some paths against the current directory, so each call runs with the repo as cwd (stage
code only uses absolute paths, so other threads are unaffected).
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

_LOCK = threading.Lock()


@contextlib.contextmanager
def _repo(root: Path):
    from dvc.exceptions import NotDvcRepoError
    from dvc.lock import LockError
    from dvc.repo import Repo

    from augdag.errors import AugdagError, RunLocked

    try:
        with _LOCK, contextlib.chdir(root), Repo(str(root)) as repo:
            yield repo
    except NotDvcRepoError:
        raise AugdagError(f"{root}: not a DVC project (no .dvc folder); the flow records each stage in dvc.lock. "
                          "Run `dvc init` there, or run augdag in the project folder (-C)") from None
    except LockError as err:  # a `dvc repro` (or another DVC command) holds DVC's repository lock
        raise RunLocked(f"{root}: DVC's repository lock is held by another DVC process (a `dvc repro`?); "
                        f"nothing was recorded in dvc.lock. Wait for it to finish and run again. ({err})") from None


def _target(root: Path, stage: str) -> str:
    # A bare stage name is looked up in the dvc.yaml of the current directory; name the file.
    return f"{Path(root).resolve() / 'dvc.yaml'}:{stage}"


def stage_status(root: Path, stage: str) -> dict:
    """DVC's status of one stage: {} when its deps, params and outs match dvc.lock."""
    with _repo(root) as repo:
        return repo.status(targets=[_target(root, stage)])


def up_to_date(root: Path, stage: str) -> bool:
    return not stage_status(root, stage)


def commit(root: Path, stage: str) -> None:
    """Record the stage's current deps, params and outs in dvc.lock and the DVC cache."""
    with _repo(root) as repo:
        repo.commit(_target(root, stage), force=True)
