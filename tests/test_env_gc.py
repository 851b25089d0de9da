"""augdag.env.frozen_heap: stages run with the objects alive at their start out of the GC's full collections."""

import gc
import threading
import weakref

from augdag.env import frozen_heap


class _Node:
    def __init__(self):
        self.me = self  # a reference cycle: only the cyclic GC frees it


def test_objects_alive_at_entry_are_frozen_and_given_back_after():
    assert gc.get_freeze_count() == 0
    before = _Node()
    with frozen_heap():
        assert gc.get_freeze_count() > 0
        frozen_at_entry = gc.get_freeze_count()
        gc.collect()  # a full collection inside the block leaves what was alive at entry frozen
        # Reference counting may still free a few frozen objects that other threads (Prefect's, pytest's) drop.
        assert 0.99 * frozen_at_entry <= gc.get_freeze_count() <= frozen_at_entry
        made_inside = _Node()
        ref_inside = weakref.ref(made_inside)
        del made_inside
        gc.collect()
        assert ref_inside() is None, "garbage made inside the block is collected as usual"
    assert gc.get_freeze_count() == 0
    ref_before = weakref.ref(before)
    del before
    gc.collect()
    assert ref_before() is None, "a cycle alive at entry is collected once the block has ended"


def test_garbage_cycle_from_before_the_block_is_not_lost():
    node = _Node()
    ref = weakref.ref(node)
    with frozen_heap():
        del node  # becomes garbage while frozen: not collected in the block ...
        gc.collect()
        assert ref() is not None
    gc.collect()  # ... but after it
    assert ref() is None


def test_nested_and_concurrent_blocks_unfreeze_only_at_the_last_exit():
    inside, leave = threading.Event(), threading.Event()
    seen = {}

    def other():
        with frozen_heap():
            inside.set()
            leave.wait(10)
        seen["after_other"] = gc.get_freeze_count()

    with frozen_heap():
        t = threading.Thread(target=other)
        t.start()
        assert inside.wait(10)
        with frozen_heap():
            pass
        assert gc.get_freeze_count() > 0, "an inner exit must not unfreeze for the blocks still running"
        leave.set()
        t.join(10)
        assert seen["after_other"] > 0, "the other thread's exit must not unfreeze while this block runs"
    assert gc.get_freeze_count() == 0


def test_an_error_in_the_block_still_unfreezes():
    try:
        with frozen_heap():
            raise RuntimeError("stage failed")
    except RuntimeError:
        pass
    assert gc.get_freeze_count() == 0


def test_run_stage_runs_the_stage_inside_it(tmp_path, monkeypatch):
    import augdag.tasks.strategy as strategy
    from augdag.tasks import run_stage

    seen = {}

    def fake_run(params, root, **_):
        seen["frozen"] = gc.get_freeze_count()
        return {}

    monkeypatch.setattr(strategy, "run", fake_run)
    run_stage("strategy", None, tmp_path)
    assert seen["frozen"] > 0
    assert gc.get_freeze_count() == 0
