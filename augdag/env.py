"""Offline defaults: nothing is downloaded at run time, and no telemetry is sent."""

import contextlib
import gc
import os
import threading

OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "DVC_NO_ANALYTICS": "1",
}


def set_offline() -> None:
    for k, v in OFFLINE.items():
        os.environ.setdefault(k, v)


MALLOC_TRIM_BYTES = 1 << 30  # mallopt takes a C int: at most 2 GiB - 1
# (mallopt parameter from malloc.h, the same setting's environment variable, value)
_MALLOC_SETTINGS = ((-8, "MALLOC_ARENA_MAX", 1), (-4, "MALLOC_MMAP_MAX_", 0),
                    (-1, "MALLOC_TRIM_THRESHOLD_", MALLOC_TRIM_BYTES))
_malloc_tuned: bool | None = None


def _libc():
    import ctypes

    return ctypes.CDLL(None)


def tune_malloc() -> bool:
    """Keep freed memory for reuse instead of handing it back to the kernel at every free (glibc only; call
    at process start, before any thread exists). Returns whether it applied.

    torch allocates and frees a buffer for every op's output. glibc serves buffers above its mmap threshold
    (at most 32 MiB) with fresh mmaps and returns them on free, and trims its heaps' free tops: every such
    buffer costs page faults and zeroing again, and a stage thread (with an arena of its own) pays far more
    of them than the main thread. One arena (all threads on the main heap), no mmaps and trimming only above
    1 GiB of free top remove most of those faults and the time they cost, without raising the evaluate
    stage's peak RSS (figures: bench/RESULTS.md, "Performance benchmarks", and docs/decisions.md, "Threads, the
    allocator and the garbage collector").

    The cost: memory freed inside a stage stays mapped until the stage ends (`release_free_memory`), so a
    stage's peak can exceed what it holds alive at once. Left alone where the user set glibc's malloc
    variables (MALLOC_*_, GLIBC_TUNABLES) or AUGDAG_MALLOC=default."""
    global _malloc_tuned
    if _malloc_tuned is not None:
        return _malloc_tuned
    _malloc_tuned = False
    if os.environ.get("AUGDAG_MALLOC", "").strip().lower() == "default" or "GLIBC_TUNABLES" in os.environ \
            or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        import ctypes

        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return False
        mallopt = _libc().mallopt
        mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
        ok = all(mallopt(param, value) == 1 for param, _, value in _MALLOC_SETTINGS)
    except (OSError, AttributeError, ValueError):
        return False
    _malloc_tuned = ok
    return ok


def release_free_memory() -> None:
    """Where `tune_malloc` applied: hand the heap's free pages back to the kernel (glibc's malloc_trim), as a
    stage ends, so the next stage starts from what is alive rather than from the last stage's high-water mark."""
    if _malloc_tuned:
        _libc().malloc_trim(0)


def export_malloc_settings() -> None:
    """Where `tune_malloc` applied, pass the same settings to the processes this one starts (glibc reads them
    from the environment at their start): `augdag server`'s flow runs run in child processes."""
    if _malloc_tuned:
        os.environ.update({name: str(value) for _, name, value in _MALLOC_SETTINGS})


@contextlib.contextmanager
def torch_threads(n: int | None):
    """torch's intra-op threads set to n inside the block (None or 0: left as they are), restored after."""
    import torch

    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


_frozen = 0
_frozen_lock = threading.Lock()


@contextlib.contextmanager
def frozen_heap():
    """Leave the objects alive when the block starts out of the cyclic GC's full collections while it runs.

    After `import torch, pandas, prefect` a process holds hundreds of thousands of GC-tracked objects, and a
    full (generation-2) collection walks them all, at times several in one stage, so a chunk that a collection
    falls inside takes much longer than one it misses (figures: docs/decisions.md, "Threads, the allocator and
    the garbage collector"). `gc.freeze()` moves those objects to the permanent
    generation, so collections during the block see only what the block made; `gc.unfreeze()` at the end gives
    them back, so garbage among them is still collected afterwards. Nestable and thread-safe (the flow runs
    branches concurrently): each entry freezes what is alive then, the last exit unfreezes. Only the GC's
    scanning changes; reference counting frees objects as always.
    """
    global _frozen
    with _frozen_lock:
        _frozen += 1
        gc.freeze()
    try:
        yield
    finally:
        with _frozen_lock:
            _frozen -= 1
            if _frozen == 0:
                gc.unfreeze()
