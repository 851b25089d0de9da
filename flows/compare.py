"""Strategy comparison as a Prefect flow: one task per (strategy, seed), one at a time (each fine-tune
uses both cores), a progress artifact while it runs, a table and a markdown artifact at the end.

The work is augdag.compare's: resolve params.yaml + strategy + seed, run ingest..evaluate in a scratch
folder, cache the record by params hash, aggregate, write <out>/comparison.{json,csv,md,svg,html}.
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

from augdag import compare
from augdag.log import logger


@task(name="compare-run", task_run_name="{strategy}-seed{seed}", retries=0, cache_policy=NO_CACHE)
def run_task(strategy: str, seed: int, base: dict, out: str, root: str, force: bool = False) -> dict:
    params = compare.resolve(base, strategy, seed)
    rec, ran = compare.run_cached(params, strategy, seed, out, base_dir=root, force=force)
    logger().info("%s seed %d: %s test accuracy %.4f, validation accuracy %s (%s s)", strategy, seed,
                  "ran," if ran else "cached (same params hash),", rec["test_accuracy"], rec.get("val_accuracy"),
                  rec["seconds"])
    return {"record": rec, "ran": ran}


def _out_dir(root: Path, out: str) -> Path:
    p = Path(out)
    return p if p.is_absolute() else root / p


@flow(name="augdag-compare", log_prints=True)
def compare_flow(root: str = ".", strategies: list[str] | None = None, seeds: list[int] | None = None,
                 out: str = "data/compare", baseline: str = "none", force: bool = False) -> dict:
    """Run every (strategy, seed) on top of params.yaml, then write the comparison (mean and Student-t
    95% CI per strategy, paired differences against `baseline`, best strategy on validation)."""
    root_p = Path(root).resolve()
    strategies = compare.check_strategies(strategies or compare.COMPARISON)
    seeds = list(seeds if seeds is not None else compare.SEEDS)
    out_p = _out_dir(root_p, out)
    base = compare.load_base(root_p)
    for s in strategies:  # fail on bad params before the first 2-minute run, not after it
        compare.resolve(base, s, seeds[0] if seeds else 0)
    jobs = [(s, seed) for s in strategies for seed in seeds]
    progress = create_progress_artifact(0.0, key="augdag-compare-progress",
                                        description=f"augdag compare: {len(jobs)} runs")
    records, ran = [], 0
    for i, (s, seed) in enumerate(jobs, 1):
        res = run_task(s, seed, base, str(out_p), str(root_p), force)
        records.append(res["record"])
        ran += res["ran"]
        update_progress_artifact(progress, 100.0 * i / len(jobs), description=f"augdag compare: {i}/{len(jobs)} runs")
    agg = compare.write_outputs(out_p, records, baseline)
    md = compare.markdown(agg)
    page = out_p / "comparison.html"
    create_table_artifact(compare.table_rows(agg), key="augdag-compare-table",
                          description="augdag compare: accuracy per strategy, mean ± 95% CI")
    create_markdown_artifact(f"### augdag compare: {len(jobs)} runs ({ran} ran, {len(jobs) - ran} cached)\n\n{md}\n"
                             f"Page with the plot: `{page}`\n", key="augdag-compare",
                             description="augdag strategy comparison")
    logger().info("comparison: %s (best on validation: %s)", page, agg["best_on_validation"])
    return {"out": str(out_p), "runs": len(jobs), "ran": ran, "cached": len(jobs) - ran,
            "best_on_validation": agg["best_on_validation"], "markdown": md}


def run_compare(root: str = ".", strategies: list[str] | None = None, seeds: list[int] | None = None,
                out: str = "data/compare", baseline: str = "none", force: bool = False) -> dict:
    return compare_flow(root=root, strategies=strategies, seeds=seeds, out=out, baseline=baseline, force=force)
