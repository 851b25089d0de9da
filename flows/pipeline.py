"""The augdag pipeline as a Prefect flow: the same stage code `dvc repro` runs, one task per stage.

The four branches run concurrently. A stage that DVC reports up to date is skipped; a stage the
flow ran is committed to dvc.lock, so `dvc status` is clean afterwards and `dvc repro` is a no-op.

Artifacts: per stage a markdown summary (`augdag-<stage>`) and, for quality, merge, finetune and
evaluate, a table of its figures (`augdag-<stage>-table`); at the end a link to the report
(`augdag-report-link`). Stage code logs through augdag.log, i.e. Prefect's run logger inside a run.
"""

from __future__ import annotations

import contextvars
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from augdag import cancel, dvcops, runlock
from augdag.log import logger
from augdag.params import SOURCES, TEXT_BRANCHES, Params, dotted_to_nested, load_params, write_overrides
from augdag.runner import current_mapper, dask_session
from augdag.storage import try_read_json
from augdag.tasks import STAGES, UPSTREAM, run_stage


def _artifact(name: str, status: str, summary: dict, seconds: float) -> None:
    rows = "\n".join(f"| {k} | {json.dumps(v) if isinstance(v, (dict, list)) else v} |" for k, v in summary.items())
    md = f"### {name}: {status} in {seconds:.1f} s\n\n| key | value |\n|---|---|\n{rows}\n"
    create_markdown_artifact(md, key=f"augdag-{name}", description=f"augdag stage {name}")


def _num(v):
    return round(v, 6) if isinstance(v, float) else v


def _ordered(summary: dict) -> list[tuple[str, dict]]:
    """raw, the branches, then any other source (summary.json files are written with sorted keys)."""
    return sorted(summary.items(), key=lambda kv: (SOURCES + (kv[0],)).index(kv[0]))


def figures(name: str, root: Path) -> list[dict] | None:
    """A stage's quality figures as table rows, read from its outputs (so a skipped stage still shows the
    figures of the outputs it kept); None for a stage without any."""
    folder = root / "data" / name
    summary = try_read_json(folder / "summary.json")
    if summary is None:
        return None
    if name == "quality":
        return [{"branch": b, "in": s["in"], "kept": s["kept"], "rejected": s["rejected"], "pass_rate": s["pass_rate"],
                 "rejected_by": ", ".join(f"{c} {n}" for c, n in s.get("rejected_by", {}).items() if n)}
                for b, s in _ordered(summary) if b in SOURCES]
    if name == "merge":
        return [{"source": src, "samples": s["samples"], "mass": _num(s["mass"])}
                for src, s in _ordered(summary) if src != "checks"]
    if name == "finetune":
        rows = [{"figure": k, "value": _num(summary[k])}
                for k in ("steps", "samples", "train_loss", "val_loss", "val_accuracy") if k in summary]
        sampling = summary.get("sampling", {})
        if sampling:
            rows.append({"figure": "sampling mode", "value": sampling.get("mode")})
        rows += [{"figure": f"final weight {src}", "value": _num(w)}
                 for src, w in sampling.get("final_weights", {}).items()]
        return rows
    if name == "evaluate":
        metrics = try_read_json(folder / "metrics.json") or summary
        rows = [{"figure": k, "value": _num(metrics[k])} for k in ("accuracy", "macro_f1", "n_test") if k in metrics]
        target = metrics.get("target")
        if target:  # evaluate.target_test
            rows += [{"figure": f"target domain: {k}", "value": _num(target[k])} for k in ("accuracy", "macro_f1",
                                                                                           "n_test")]
        rob = metrics.get("robustness")
        if rob:
            rows.append({"figure": f"robustness: clean accuracy (n={rob['n']})", "value": _num(rob["clean"])})
            rows += [{"figure": f"robustness: {attack} accuracy, eps {eps}", "value": _num(acc)}
                     for attack, by_eps in rob.items() if isinstance(by_eps, dict) for eps, acc in by_eps.items()]
        return rows
    return None


def _table(name: str, root: Path, status: str) -> None:
    rows = figures(name, root)
    if rows:
        create_table_artifact(rows, key=f"augdag-{name}-table", description=f"augdag stage {name}: figures ({status})")


def _text_samples(name: str, root: Path) -> None:
    """Modality text: a branch's first variants beside their sources, changes marked (`augdag-<branch>-samples`)."""
    if name not in TEXT_BRANCHES:
        return
    from augdag.tasks.report.text import samples_markdown

    md = samples_markdown(root, name)
    if md:
        create_markdown_artifact(md, key=f"augdag-{name}-samples", description=f"augdag {name}: text samples")


def _report_link(root: Path) -> None:
    page = root / "data" / "report" / "report.html"
    if not page.exists():
        return
    metrics = try_read_json(root / "data" / "evaluate" / "metrics.json") or {}
    line = (f"test accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}\n\n"
            if "accuracy" in metrics and "macro_f1" in metrics else "")
    # Browsers may not follow a file:// link from an http:// page: the path is there to copy as well.
    md = f"### augdag report\n\n[{page.name}]({page.as_uri()})\n\n{line}`{page}`\n"
    create_markdown_artifact(md, key="augdag-report-link", description="augdag: the run's HTML report")


def _run(name: str, params: Params, root: Path, workers: int) -> dict:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return run_stage(name, params, root, mapper=current_mapper(name, pool.map), chunk_size=params.runner.chunk_size)


def in_own_thread(thread_name: str, fn, *args):
    """fn(*args) in a new thread that ends when fn returns (with the caller's context: Prefect's run context,
    so stage logs reach the run). torch's OpenMP keeps a pool of worker threads per thread that ran a parallel
    op, for as long as that thread lives; the task runner's threads live for the whole flow, and once more
    pool threads exist than cores, OpenMP stops spinning between ops and its workers sleep and wake at every
    op, so a stage that uses torch in a task-runner thread after another thread has used it runs markedly
    slower (bench/prefect_overhead.py; docs/decisions.md). A thread per stage frees its pool when the stage
    ends."""
    ctx = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name) as one:
        return one.submit(ctx.run, fn, *args).result()


@task(name="stage", task_run_name="{name}", retries=0)
def stage_task(name: str, params: Params, root: str, workers: int, force: bool = False) -> dict:
    root_p = Path(root)
    t0 = time.monotonic()
    if not force and dvcops.up_to_date(root_p, name):
        logger().info("%s: up to date in dvc.lock, skipped", name)
        _artifact(name, "skipped (up to date)", {}, time.monotonic() - t0)
        _table(name, root_p, "up to date, from an earlier run")
        return {"skipped": True}
    summary = in_own_thread(f"augdag-{name}", _run, name, params, root_p, workers)
    dvcops.commit(root_p, name)
    _artifact(name, "ran", summary, time.monotonic() - t0)
    _table(name, root_p, "ran")
    _text_samples(name, root_p)
    return summary


@flow(name="augdag-pipeline", log_prints=True)
def pipeline(root: str = ".", params_file: str = "params.yaml", set_params: list[str] | None = None,
             workers: int = 2, force: bool = False) -> dict:
    """Run the whole DAG. `set_params` (e.g. ["traditional.ops.rotation.degrees=20"]) is written into
    params.yaml first, as `dvc exp run --set-param` does, so dvc.lock always matches the outputs."""
    root_p = Path(root).resolve()
    path = root_p / params_file
    with runlock.hold(root_p, "augdag run (flow augdag-pipeline)"):  # one run per project: shared params.yaml, data/
        before = path.read_bytes() if set_params and path.exists() else None
        lock = root_p / "dvc.lock"
        lock_before = lock.read_bytes() if lock.exists() else None
        if set_params:
            overrides = dotted_to_nested(set_params)
            source = overrides.get("ingest", {}).get("source") if isinstance(overrides.get("ingest"), dict) else None
            if isinstance(source, str) and source != "fashion-mnist":
                from augdag.data import survey_folder

                survey_folder(source)  # a missing folder, or one without class folders, fails before the write
            write_overrides(path, overrides)
        try:
            params = load_params(path)
            futures: dict = {}
            with dask_session(params.runner):  # runner.kind=dask: the branches' shard tasks run on Dask
                for name in STAGES:
                    wait = [futures[u] for u in UPSTREAM[name]]
                    futures[name] = stage_task.submit(
                        name, params, str(root_p), workers, force, wait_for=wait)
                try:
                    results = {name: f.result() for name, f in futures.items()}
                except BaseException as err:
                    if not isinstance(err, Exception):  # Ctrl-C, or Prefect's SIGTERM (a served run cancelled)
                        cancel.request()  # the running stages stop at their next step or chunk
                    for f in futures.values():  # a stage's commit to dvc.lock is not cut short
                        f.wait()
                    raise
        except BaseException:
            # A run that failed before any stage finished (e.g. ingest refused the folder) leaves params.yaml as
            # it was: data/ and dvc.lock still hold the old run, and dvc status stays clean.
            if before is not None and (lock.read_bytes() if lock.exists() else None) == lock_before:
                from augdag.storage import write_text

                write_text(path, before.decode("utf-8"))
                logger().warning("params.yaml restored: the run failed before any stage finished")
            raise
    _report_link(root_p)
    logger().info("report: %s", root_p / "data" / "report" / "report.html")
    return results


def run_pipeline(root: str = ".", set_params: list[str] | None = None, workers: int = 2, force: bool = False) -> dict:
    return pipeline.with_options(task_runner=ThreadPoolTaskRunner(max_workers=max(len(UPSTREAM["quality"]), workers)))(
        root=root, set_params=set_params, workers=workers, force=force)
