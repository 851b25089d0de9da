"""Compiled kernels (numba), for the per-pixel loops that torch runs as many whole-array passes.

numba is imported, and a kernel compiled, on first use; numba caches the machine code on disk next to
the module that defines the kernel (its `__pycache__`, or numba's user cache where that is read-only),
so later processes load it in milliseconds. Every kernel here:

- releases the GIL (`nogil`), so a stage's worker threads run kernels side by side;
- keeps its buffers per call, so calls from several threads never share state;
- is compiled without fast-math: float operations are IEEE, in the written order, so the bytes do not
  depend on the vector width the CPU offers;
- uses numpy's error model (a float division by zero gives inf, not a Python exception check in the
  loop, which stops LLVM from vectorising it).

numba keys its cache on the kernel's source file and the constants a closure captures, not on OPTIONS:
after changing OPTIONS, remove the `*.nbi`/`*.nbc` files under augdag/__pycache__.

`specialised(factory)` builds one kernel per value of its compile-time constants (e.g. the channel count:
the SSIM pass runs much faster with a stride known at compile time than with one read at run time).
"""

from __future__ import annotations

import threading
from typing import Callable

OPTIONS = dict(cache=True, nogil=True, boundscheck=False, error_model="numpy")


def njit(fn: Callable) -> Callable:
    """numba.njit with OPTIONS."""
    import numba

    return numba.njit(**OPTIONS)(fn)


def specialised(factory: Callable[..., Callable]) -> Callable[..., Callable]:
    """get(*consts) -> factory(*consts), built once per consts in this process (thread-safe)."""
    built: dict = {}
    lock = threading.Lock()

    def get(*consts):
        fn = built.get(consts)
        if fn is None:
            with lock:
                fn = built.get(consts)
                if fn is None:
                    fn = built[consts] = factory(*consts)
        return fn

    get.__doc__ = factory.__doc__
    return get
