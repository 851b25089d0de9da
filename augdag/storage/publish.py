"""Atomic publishing: a stage output folder (atomic_dir) or one file (write_text, write_json) replaces the last one
in one step, or not at all; and the small JSON readers the stages share.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Iterator

from augdag import faults
from augdag.errors import DataError, StorageError


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield an empty temporary sibling of `final`; on success it replaces `final` in one step.

    The swap is one atomic rename (Linux renameat2 RENAME_EXCHANGE), so a reader sees the whole
    previous output or the whole new one, never a mix or nothing, and a process killed at any moment
    leaves the last good output in place. Where the filesystem cannot exchange, the previous output is
    moved aside first; a crash between the two renames leaves it as `.NAME.old-PID`, put back by the
    next write. Leftovers of killed writers (`.NAME.tmp-PID`) are removed by the next write. A write that
    fails for lack of space (or quota, or a read-only disk) raises StorageError naming the output;
    nothing is published and the previous output stays.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _clear_leftovers(final)
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
        _remove(tmp)
        tmp.mkdir()
    except OSError as err:
        if _out_of_space(err):
            raise _storage_error(final, err) from None
        raise
    try:
        yield tmp
        faults.point(f"publish:{final.name}")
        keep = final / ".gitignore"  # DVC's, for outputs that are files in this folder: git tracks it
        if keep.is_file() and not (tmp / ".gitignore").exists():
            shutil.copy2(keep, tmp / ".gitignore")
        _publish(tmp, final)
    except BaseException as err:
        _remove(tmp)
        if _out_of_space(err):
            raise _storage_error(final, err) from None
        raise


_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")  # numpy's tofile/np.save on a full disk (no errno)


def _out_of_space(err: BaseException) -> bool:
    if isinstance(err, StorageError):
        return True
    if not isinstance(err, OSError):
        return False
    return err.errno in _NO_SPACE or (err.errno is None and bool(_SHORT_WRITE.search(str(err))))


def _storage_error(final: Path, err: BaseException) -> StorageError:
    if isinstance(err, StorageError):
        detail = str(err)
    elif err.errno is None:
        detail = f"the disk is full or over quota (a short write: {err})"
    else:
        detail = f"{err.strerror or err}" + (f" (writing {err.filename})" if err.filename else "")
    return StorageError(f"{final}: cannot write this output: {detail}. Nothing was published; the previous "
                        f"output at {final} (if any) is kept. Free space on that disk and run the stage again.")


def _remove(path: Path) -> None:
    """Delete a file, link or folder tree if it exists; never raises."""
    try:
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.exists():
            shutil.rmtree(path, ignore_errors=True)
    except OSError:
        pass


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftover: an earlier write of this process that was interrupted
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clear_leftovers(final: Path) -> None:
    """Remove the temporary folders of writers that died; put back a last output a crash left moved aside."""
    for kind in ("tmp", "old"):
        for p in sorted(final.parent.glob(f".{glob.escape(final.name)}.{kind}-*")):
            pid = p.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or _pid_alive(int(pid)):
                continue
            if kind == "old" and not (final.exists() or final.is_symlink()):
                os.replace(p, final)  # the last good output, moved aside by a publish that was killed
            else:
                _remove(p)


_RENAME_EXCHANGE = 2
_renameat2 = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    global _renameat2
    if sys.platform != "linux" or "no-exchange" in os.environ.get(faults.ENV, ""):
        return False
    if _renameat2 is None:
        try:
            import ctypes

            fn = ctypes.CDLL(None, use_errno=True).renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            _renameat2 = (fn, ctypes.get_errno)
        except (OSError, AttributeError):
            _renameat2 = False
    if not _renameat2:
        return False
    fn, get_errno = _renameat2
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def _publish(tmp: Path, final: Path) -> None:
    if not (final.exists() or final.is_symlink()):
        os.rename(tmp, final)
        return
    if _exchange(tmp, final):
        _remove(tmp)  # now holds the previous output
        return
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    _remove(old)
    os.replace(final, old)
    faults.point(f"swap:{final.name}")
    os.replace(tmp, final)
    _remove(old)


def write_text(path: str | Path, text: str) -> None:
    """Write a file atomically: a hidden temporary sibling, then a rename. A full disk raises StorageError
    naming the file, and the previous file stays."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException as err:
        _remove(tmp)
        if _out_of_space(err):
            raise StorageError(f"{path}: cannot write: {err.strerror or err}; "
                               "the previous file (if any) is kept") from None
        raise
    faults.wrote(path)


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path):
    """The parsed file, or None when it does not exist."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None


def try_read_json(path: str | Path):
    """read_json that never raises: None for a file that is absent or unreadable."""
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def load_json(path: str | Path, what: str):
    """A JSON file a stage wrote, or DataError naming it (missing, not UTF-8, not JSON)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found (run the upstream stage first)") from None
    except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise DataError(f"{path}: {what} is not readable JSON: {err}") from None
