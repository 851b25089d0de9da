"""The flow runs each stage in a thread of its own that ends with the stage (flows/pipeline.in_own_thread)."""

import contextvars
import os
import threading
import time

import pytest

from augdag.flows.pipeline import in_own_thread


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def test_the_stage_thread_ends_and_sees_the_callers_context():
    var = contextvars.ContextVar("run", default=None)
    var.set("the run's context")  # Prefect's run context is a contextvar: stage logs find their run through it
    seen = {}

    def stage(x):
        seen["thread"], seen["var"] = threading.current_thread(), var.get()
        return x + 1

    assert in_own_thread("augdag-test", stage, 1) == 2
    assert seen["var"] == "the run's context" and seen["thread"] is not threading.current_thread()
    assert seen["thread"].name.startswith("augdag-test") and not seen["thread"].is_alive()

    def fails():
        raise ValueError("stage failed")

    with pytest.raises(ValueError, match="stage failed"):
        in_own_thread("augdag-test", fails)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through /proc")
def test_torchs_thread_pool_of_a_stage_goes_with_its_thread():
    """OpenMP keeps a pool of workers per thread that ran a parallel op; a stage's must not outlive it."""
    import torch

    def torch_work():
        with torch.no_grad():
            torch.set_num_threads(2)
            a = torch.randn(256, 256)
            for _ in range(3):
                a = torch.tanh(a @ a / 256)  # a parallel op: the calling thread's OpenMP team starts
        return _threads()

    def settled(want: int) -> int:
        deadline = time.monotonic() + 10
        while _threads() > want and time.monotonic() < deadline:  # pool threads exit after their master
            time.sleep(0.05)
        return _threads()

    in_own_thread("augdag-test", torch_work)  # torch's first parallel op may start threads of its own, once
    time.sleep(1.0)
    after_first = _threads()
    for _ in range(3):  # every stage thread's pool goes with it: the thread count does not grow stage by stage
        during = in_own_thread("augdag-test", torch_work)
        assert during > after_first, "the stage's thread and its pool were running"
        assert settled(after_first) <= after_first
