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

    After `import torch, pandas, prefect` a process holds ~650,000 GC-tracked objects, and a full (generation-2)
    collection walks them all: 0.5 s each, at times several in one stage (a traditional chunk of 5,000 28x28
    samples took 0.75 s, or 1.3 s when one fell inside it). `gc.freeze()` moves those objects to the permanent
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
