"""The augdag pipeline as a Prefect flow: the same stage code `dvc repro` runs, one task per stage.

The three branches run concurrently. A stage that DVC reports up to date is skipped; a stage the
flow ran is committed to dvc.lock, so `dvc status` is clean afterwards and `dvc repro` is a no-op.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from augdag import dvcops
from augdag.log import logger
from augdag.params import Params, dotted_to_nested, load_params, write_overrides
from augdag.tasks import STAGES, UPSTREAM, run_stage


def _artifact(name: str, status: str, summary: dict, seconds: float) -> None:
    rows = "\n".join(f"| {k} | {json.dumps(v) if isinstance(v, (dict, list)) else v} |" for k, v in summary.items())
    md = f"### {name}: {status} in {seconds:.1f} s\n\n| key | value |\n|---|---|\n{rows}\n"
    create_markdown_artifact(md, key=f"augdag-{name}", description=f"augdag stage {name}")


@task(name="stage", task_run_name="{name}", retries=0)
def stage_task(name: str, params: Params, root: str, workers: int, force: bool = False) -> dict:
    root_p = Path(root)
    t0 = time.monotonic()
    if not force and dvcops.up_to_date(root_p, name):
        logger().info("%s: up to date in dvc.lock, skipped", name)
        _artifact(name, "skipped (up to date)", {}, time.monotonic() - t0)
        return {"skipped": True}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        summary = run_stage(name, params, root_p, mapper=pool.map)
    dvcops.commit(root_p, name)
    _artifact(name, "ran", summary, time.monotonic() - t0)
    return summary


@flow(name="augdag-pipeline", log_prints=True)
def pipeline(root: str = ".", params_file: str = "params.yaml", set_params: list[str] | None = None,
             workers: int = 2, force: bool = False) -> dict:
    """Run the whole DAG. `set_params` (e.g. ["traditional.ops.rotation.degrees=20"]) is written into
    params.yaml first, as `dvc exp run --set-param` does, so dvc.lock always matches the outputs."""
    root_p = Path(root).resolve()
    path = root_p / params_file
    if set_params:
        write_overrides(path, dotted_to_nested(set_params))
    params = load_params(path)
    futures: dict = {}
    for name in STAGES:
        wait = [futures[u] for u in UPSTREAM[name]]
        futures[name] = stage_task.submit(
            name, params, str(root_p), workers, force, wait_for=wait)
    results = {name: f.result() for name, f in futures.items()}
    logger().info("report: %s", root_p / "data" / "report" / "report.html")
    return results


def run_pipeline(root: str = ".", set_params: list[str] | None = None, workers: int = 2, force: bool = False) -> dict:
    return pipeline.with_options(task_runner=ThreadPoolTaskRunner(max_workers=max(3, workers)))(
        root=root, set_params=set_params, workers=workers, force=force)
