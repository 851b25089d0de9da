"""The strategy search as a Prefect flow (`augdag tune`): one task per (trial, fold) fine-tune, a progress
artifact while it runs, a table of the trials and a markdown summary of the winner at the end.

The work is augdag.tune's: Optuna proposes a trial, each fold is a fine-tune scored on validation only.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE

from augdag import tune
from augdag.log import logger


@task(name="tune-fold", task_run_name="seed{seed}", retries=0, cache_policy=NO_CACHE)
def fold_task(params, seed: int, out: str, root: str) -> dict:
    return tune.run_fold(params, Path(out), Path(root))


@flow(name="augdag-tune", log_prints=True)
def tune_flow(root: str = ".", trials: int = 20, folds: int = 3, out: str = "data/tune", seed: int = 0,
              timeout: float | None = None, apply: bool = False) -> dict:
    """Search augmentation strategies for the project's data on validation accuracy (augdag tune)."""
    root_p = Path(root).resolve()
    out_p = Path(out) if Path(out).is_absolute() else root_p / out
    progress = create_progress_artifact(0.0, key="augdag-tune-progress", description=f"augdag tune: {trials} trials")
    done = [0]

    def run(params):
        rec = fold_task(params, params.seed, str(out_p), str(root_p))
        done[0] += 1
        update_progress_artifact(progress, min(100.0, 100.0 * done[0] / (trials * folds)))
        return rec

    res = tune.search(root_p, trials=trials, folds=folds, out=out_p, seed=seed, timeout=timeout, fold_runner=run,
                      log=logger().info)
    create_table_artifact([{"trial": r["trial"], "state": r["state"], "val_accuracy_mean": r["val_accuracy_mean"],
                            **{k: str(v) for k, v in r["knobs"].items()}} for r in res["rows"]],
                          key="augdag-tune-trials", description="augdag tune: every trial, validation accuracy")
    best = res["best"]
    md = (f"### augdag tune: best of {res['trials']} trials ({res['pruned']} pruned), {res['folds']} folds\n\n"
          f"mean validation accuracy **{best['val_accuracy_mean']:.4f}** (trial {best['trial']})\n\n"
          + "\n".join(f"- `{s}`" for s in best["set"]) + "\n")
    create_markdown_artifact(md, key="augdag-tune", description="augdag tune: the winner")
    if apply:
        tune.apply(root_p, res)
        logger().info("tune: the winner is written into %s", root_p / "params.yaml")
    return res
