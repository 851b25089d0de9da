"""Ctrl-C: one press stops the work within seconds, cleanly.

Python raises KeyboardInterrupt in the main thread only, while stage code runs in worker threads (the
flow's task runner, a stage's chunk pool) that the interpreter waits for at exit: without help a
Ctrl-C during a fine-tune waited for the fine-tune to end. `sigint_stops_work()` (installed by the
`augdag` command) sets a process-wide flag on the first SIGINT and raises KeyboardInterrupt in the main
thread as usual; stage loops call `check()` (Progress.update does, and so does every chunk a stage maps),
which raises `Cancelled` once the flag is set. The stage's atomic output folder is then discarded, so
the previous output stays, and nothing is committed to dvc.lock. A second Ctrl-C exits at once (status
130), still leaving no half-written output in place: outputs are published by one rename.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from typing import Callable, Iterable, Iterator

_stop = threading.Event()


class Cancelled(KeyboardInterrupt):
    """Raised in stage code once a stop was requested (a KeyboardInterrupt, so `except Exception` lets it by)."""


def request() -> None:
    _stop.set()


def reset() -> None:
    _stop.clear()


def check() -> None:
    """Raise Cancelled if a stop was requested (cheap enough for a training step or a chunk)."""
    if _stop.is_set():
        raise Cancelled("stopped by Ctrl-C")


def cancellable(mapper: Callable) -> Callable:
    """`mapper(fn, chunks)` whose chunks are not started, and whose results stop being awaited, once a stop
    was requested: queued chunks of a thread pool then end at once instead of running to the last."""

    def wrapped(fn: Callable, chunks: Iterable) -> Iterator:
        @functools.wraps(fn)
        def guarded(chunk):
            check()
            return fn(chunk)

        for result in mapper(guarded, chunks):
            check()
            yield result

    wrapped.distributed = getattr(mapper, "distributed", False)  # type: ignore[attr-defined]
    return wrapped


@contextlib.contextmanager
def sigint_stops_work(message: str = "augdag: Ctrl-C: stopping; the running stage's output is discarded and the "
                                    "previous one kept (Ctrl-C again to quit at once)") -> Iterator[None]:
    """For the block, in the main thread: the first SIGINT requests a stop and raises KeyboardInterrupt; a
    second one exits with status 130 at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if _stop.is_set():
            os.write(2, b"augdag: second Ctrl-C: quitting now\n")
            os._exit(130)
        _stop.set()
        print(message, file=sys.stderr, flush=True)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
