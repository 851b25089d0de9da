"""Where the flow's shard work runs: threads in this process, or Prefect tasks on Dask (prefect-dask).

The branches split their work into chunks (`mapper(chunk_fn, chunks)` in tasks/_branch.py) and write
the results in plan order, so the bytes do not depend on where or in which order chunks run. With
`runner.kind: dask` the flow opens one `prefect_dask.DaskTaskRunner` for the run (a `LocalCluster` of
`runner.n_workers` processes, or the scheduler at `runner.address`) and each chunk becomes a Prefect
task run, `<stage>-shard-<n>`, executed on a Dask worker: visible in the UI under its stage.

On a real cluster the workers must import augdag (the same version) and see the project folder at the
same path (a shared filesystem): chunk functions read the upstream stage's shards from it.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Callable, Iterable, Iterator

from prefect import task
from prefect.cache_policies import NO_CACHE

from augdag.errors import AugdagError
from augdag.params import RunnerParams

# The flow's Dask task runner while a run holds one; stage tasks (threads of the flow's thread-pool task
# runner, which copies context variables into them) read it here.
_DASK: contextvars.ContextVar[Any] = contextvars.ContextVar("augdag_dask_runner", default=None)


@task(name="shard", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=1)
def shard_task(fn: Callable, args: Any) -> Any:
    """One chunk of a branch: a pure function of its arguments, so a retry gives the same result."""
    return fn(args)


@contextlib.contextmanager
def dask_session(rp: RunnerParams) -> Iterator[Any]:
    """Yield a started DaskTaskRunner for `rp` (None for the local runner) and make it the current one."""
    if rp.kind != "dask":
        yield None
        return
    from prefect_dask import DaskTaskRunner

    if rp.address:
        runner = DaskTaskRunner(address=rp.address)
    else:
        runner = DaskTaskRunner(cluster_kwargs={"n_workers": rp.n_workers, "threads_per_worker": 1,
                                                "processes": True, "dashboard_address": None})
    with runner:
        try:
            runner.client  # connect now, once: stage threads must not race to create two clusters
        except OSError as err:
            where = rp.address or f"a LocalCluster of {rp.n_workers} workers"
            raise AugdagError(f"runner.kind=dask: cannot reach {where}: {err}") from None
        token = _DASK.set(runner)
        try:
            yield runner
        finally:
            _DASK.reset(token)


def current_mapper(stage: str, local: Callable) -> Callable:
    """The mapper a stage task hands its stage function: `local` (e.g. a thread pool's map), or one that
    submits every chunk as a Prefect shard task on the run's Dask cluster and yields results in order."""
    runner = _DASK.get()
    if runner is None:
        return local

    def mapper(fn: Callable, chunks: Iterable) -> Iterator:
        futures = [runner.submit(shard_task.with_options(task_run_name=f"{stage}-shard-{i:04d}"),
                                 {"fn": fn, "args": chunk}) for i, chunk in enumerate(chunks)]
        for f in futures:
            yield f.result()

    mapper.distributed = True  # type: ignore[attr-defined]  (stages that compute with torch map on it alone)
    return mapper
