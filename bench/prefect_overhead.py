"""The Prefect route's overhead against calling the same stage functions directly.

Per repeat, two fresh scratch projects (a copy of the project's code, params.yaml with `--set` written
in, git + DVC initialised), each run in its own process:

- direct: `augdag.tasks.run_stage(name, params, root, mapper=pool.map)` for every stage in order, as
  augdag/compare.py's run_one does (plus the report stage, which the flow also runs; the same thread
  pool of `--workers` per stage as the flow's stage task). No Prefect, no DVC. The stages run in the
  main thread, as in run_one; `--direct-in-thread` runs them all in one long-lived worker thread
  instead (a diagnostic: that is where the flow ran them until each stage got a thread of its own;
  torch's OpenMP pools per thread then outnumbered the cores and the fine-tune ran 1.3-1.5x slower,
  see flows/pipeline.in_own_thread).
- flow: what `augdag run` does: Prefect's temporary local server (PREFECT_API_URL is removed from the
  child's environment) launched by `augdag.prefect_server.temporary_server` before the flow's modules
  import, then `augdag.flows.pipeline.run_pipeline(root, workers=...)`: one task per stage, the three
  branches concurrently, per stage a DVC status check before and a `dvc commit` after, markdown/table
  artifacts. The branches' chunks run
  where params.yaml's `runner` says (where the project has that section; local threads by default;
  the direct route always uses threads, so compare with runner.kind local).

Besides that difference of wall clocks, which carries the stages' run-to-run noise (+-10 s a stage
here), the script prints the time outside the stage functions (process wall minus the time some stage
function runs: imports, server, orchestration, DVC) in each route, and the time inside them.

Each process's wall clock is measured from outside (Python start and imports included: the flow
route also imports Prefect), and inside it the run call itself. In the flow process the DVC calls
and the stage functions are timed by wrapping `augdag.dvcops.up_to_date`/`commit` and the flow's
`run_stage` (a timer around the call, nothing else), so the overhead splits into DVC bookkeeping
and Prefect's own share (server start, task orchestration, artifacts, logging).

The table's flow run call includes the wait for the server (the part of its start the imports did not
cover) and its stop.

Overhead = median flow wall − median direct wall, printed as seconds, as a share of the flow run and
relative to the direct run (issue 7's target: under 15 % of a default run). The runs are
interleaved (direct, flow; then flow, direct; ...), so load drift hits both routes alike.

Prefect's home (its SQLite DB) is a fresh folder under the scratch folder unless --prefect-home.
One untimed warm-up flow run on a tiny project (the same params shrunk: a few images, 3 fine-tune
steps) creates that database and brings the libraries, weights and dataset into the page cache, so
the first timed run pays for neither.

    .venv/bin/python bench/prefect_overhead.py                        # the project's params.yaml as is
    .venv/bin/python bench/prefect_overhead.py --repeats 2 --set finetune.steps=5 ingest.n_per_class=5
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T_START = time.perf_counter()

from _util import chunk_kw, env, load, machine_line, make_project, median, spread  # noqa: E402

# The warm-up run's params, on top of --set: a tiny run of the same stages.
WARMUP = ["ingest.n_per_class=2", "ingest.n_val_per_class=1", "ingest.n_test_per_class=3",
          "generative.model.steps=5", "generative.model.batch_size=8", "finetune.steps=3", "finetune.batch_size=8",
          "finetune.eval_every=2", "evaluate.robustness.n_samples=10", "report.grid_samples=4"]


# --- child processes ----------------------------------------------------------------------------------

def children_cpu() -> float:
    """CPU seconds (user + system) used so far by this process's child processes (the flow's temporary
    Prefect server: it shares the cores with the stages)."""
    import psutil

    total = 0.0
    for p in psutil.Process().children(recursive=True):
        try:
            c = p.cpu_times()
            total += c.user + c.system
        except psutil.Error:
            pass
    return total


def busy(intervals) -> float:
    """Length of the union of [start, end] intervals: the time some stage function was running (the flow's
    three branches overlap)."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def child(route: str, root: Path, workers: int, result: Path, in_thread: bool = False) -> None:
    t_imp = time.perf_counter()
    from augdag.env import set_offline, tune_malloc

    set_offline()
    tune_malloc()  # both routes, as the augdag command does at its start
    from concurrent.futures import ThreadPoolExecutor

    from augdag.params import load_params
    from augdag.tasks import STAGES, run_stage

    timings: dict = {"stages": {}, "intervals": {}, "dvc_status": 0.0, "dvc_commit": 0.0}
    if route == "direct":
        params = load_params(root / "params.yaml")
        timings["import"] = time.perf_counter() - t_imp

        def one(name):
            with ThreadPoolExecutor(max_workers=workers) as pool:
                run_stage(name, params, root, mapper=pool.map, **chunk_kw(params))

        outer = ThreadPoolExecutor(max_workers=1) if in_thread else None
        t = time.perf_counter()
        for name in STAGES:
            s = time.perf_counter()
            outer.submit(one, name).result() if outer else one(name)
            timings["stages"][name] = time.perf_counter() - s
            timings["intervals"][name] = [s - t, time.perf_counter() - t]
        timings["run"] = time.perf_counter() - t
    else:
        from augdag.prefect_server import temporary_server

        with temporary_server() as server:  # as `augdag run` does: the server boots while the flow imports
            from augdag import dvcops
            from augdag.flows import pipeline

            def timed(fn, key, per_stage=False):
                def wrapper(first, *a, **kw):  # run_stage(name, ...); up_to_date/commit(root, name)
                    s = time.perf_counter()
                    try:
                        return fn(first, *a, **kw)
                    finally:
                        d = time.perf_counter() - s
                        if per_stage:
                            timings["stages"][first] = d
                            timings["intervals"][first] = [s - t_run, s + d - t_run]
                        else:
                            timings[key] += d
                return wrapper

            # A timer around each call: dvcops' functions and the flow's reference to run_stage.
            dvcops.up_to_date = timed(dvcops.up_to_date, "dvc_status")
            dvcops.commit = timed(dvcops.commit, "dvc_commit")
            pipeline.run_stage = timed(pipeline.run_stage, None, per_stage=True)
            timings["import"] = time.perf_counter() - t_imp
            t = t_run = time.perf_counter()
            server.ready()
            timings["server_wait"] = time.perf_counter() - t
            pipeline.run_pipeline(str(root), workers=workers)
            timings["server_cpu"] = children_cpu()  # the temporary Prefect server, up until the block ends
        timings["run"] = time.perf_counter() - t
    timings["since_start"] = time.perf_counter() - T_START
    result.write_text(json.dumps(timings))


def spawn(route: str, root: Path, workers: int, work: Path, prefect_home: Path, tag: str,
          in_thread: bool = False) -> dict:
    result = work / f"{tag}.json"
    log = work / f"{tag}.log"
    e = env()
    e.pop("PREFECT_API_URL", None)  # Prefect's temporary local server, as `augdag run` without a server
    e["PREFECT_HOME"] = str(prefect_home)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", route, "--root", str(root),
           "--workers", str(workers), "--result", str(result)] + (["--direct-in-thread"] if in_thread else [])
    t = time.perf_counter()
    with log.open("w") as f:
        rc = subprocess.run(cmd, cwd=root, env=e, stdout=f, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t
    if rc != 0:
        raise SystemExit(f"{route} run failed ({rc}); its log: {log}\n" + log.read_text()[-3000:])
    return {**json.loads(result.read_text()), "wall": wall}


# --- parent -------------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", dest="extra", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                    help="params overrides on top of the project's params.yaml (default: none, i.e. a default run)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each route; medians are reported")
    ap.add_argument("--workers", type=int, default=2,
                    help="thread pool per stage, both routes (augdag run's default: 2)")
    ap.add_argument("--workdir", help="scratch folder (default: a temporary one, removed at the end)")
    ap.add_argument("--direct-in-thread", action="store_true",
                    help="direct route: run each stage in a worker thread, as the flow's task runner does")
    ap.add_argument("--prefect-home", help="PREFECT_HOME for the runs (default: a fresh folder in the scratch folder)")
    ap.add_argument("--child", choices=["direct", "flow"], help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child, Path(args.root), args.workers, Path(args.result), args.direct_in_thread)

    print(machine_line())
    print(f"params: the project's params.yaml + {' '.join(args.extra) or '(no overrides)'}; {args.workers} workers "
          f"per stage; {args.repeats} repeats, medians, wall clock")
    work = Path(args.workdir).resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="augdag-bench-prefect-"))
    work.mkdir(parents=True, exist_ok=True)
    home = Path(args.prefect_home).resolve() if args.prefect_home else work / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    try:
        proj = make_project(work / "warmup", [*args.extra, *WARMUP])
        w = spawn("flow", proj, args.workers, work, home, "warmup")
        shutil.rmtree(proj, ignore_errors=True)
        print(f"warm-up flow run on a tiny project, PREFECT_HOME={home}: {w['wall']:.1f} s (not counted)")
        runs: dict[str, list[dict]] = {"direct": [], "flow": []}
        for r in range(args.repeats):
            order = ("direct", "flow") if r % 2 == 0 else ("flow", "direct")
            for route in order:
                proj = make_project(work / f"{route}-{r}", args.extra)
                res = spawn(route, proj, args.workers, work, home, f"{route}-{r}", args.direct_in_thread)
                runs[route].append(res)
                print(f"  repeat {r + 1}: {route:<6} {res['wall']:7.1f} s (run call {res['run']:.1f} s)", flush=True)
                shutil.rmtree(proj, ignore_errors=True)
        d, f = runs["direct"], runs["flow"]
        med = lambda rs, k: median([x[k] for x in rs])  # noqa: E731
        stage_sum = lambda x: sum(x["stages"].values())  # noqa: E731
        print()
        head = (f"{'route':<34} {'process wall s':>14} {'min-max':>13} {'imports s':>9} {'run call s':>10} "
                f"{'stage fns s':>11} {'DVC s':>7} {'rest s':>7}")
        print(head)
        print("-" * len(head))
        direct_name = "direct (run_stage, worker thread)" if args.direct_in_thread else "direct (run_stage in order)"
        for name, rs in ((direct_name, d), ("Prefect flow (run_pipeline)", f)):
            walls = [x["wall"] for x in rs]
            dvc = median([x["dvc_status"] + x["dvc_commit"] for x in rs])
            stages = median([stage_sum(x) for x in rs])
            rest = median([x["run"] - stage_sum(x) - x["dvc_status"] - x["dvc_commit"] for x in rs])
            print(f"{name:<34} {median(walls):>14.1f} {spread(walls):>13} {med(rs, 'import'):>9.1f} "
                  f"{med(rs, 'run'):>10.1f} {stages:>11.1f} {dvc:>7.1f} {rest:>7.1f}")
        over = med(f, "wall") - med(d, "wall")
        print(f"\noverhead of the Prefect route: {over:+.1f} s = {100 * over / med(f, 'wall'):.1f} % of the flow run, "
              f"{100 * over / med(d, 'wall'):+.1f} % over the direct run (target: < 15 %)")
        dvc_s = median([x["dvc_status"] + x["dvc_commit"] for x in f])
        print(f"  of which DVC bookkeeping (status before, commit after each stage): {dvc_s:.1f} s "
              f"(status {med(f, 'dvc_status'):.1f} s, commit {med(f, 'dvc_commit'):.1f} s); "
              f"the flow's extra imports: {med(f, 'import') - med(d, 'import'):+.1f} s")
        print("  (stage fns s: the sum of the stage functions' times; in the flow the three branches run "
              "concurrently, so the run call can be shorter than that sum plus the rest)")
        # The wall clocks above carry the stages' run-to-run noise (+-10 s a stage on a shared machine). What the
        # Prefect route adds around the same stage code is the process's time when no stage function runs.
        inside = lambda x: busy(x["intervals"].values())  # noqa: E731
        outside = lambda x: x["wall"] - inside(x)  # noqa: E731
        o_d, o_f = median([outside(x) for x in d]), median([outside(x) for x in f])
        b_d, b_f = median([inside(x) for x in d]), median([inside(x) for x in f])
        print(f"\ntime outside the stage functions (process wall - time some stage function runs), median: "
              f"direct {o_d:.1f} s, flow {o_f:.1f} s: the Prefect route adds {o_f - o_d:+.1f} s = "
              f"{100 * (o_f - o_d) / med(f, 'wall'):.1f} % of the flow run (per repeat: "
              f"{', '.join(f'{outside(y) - outside(x):+.1f}' for x, y in zip(d, f))} s)")
        print(f"time some stage function runs, median: direct {b_d:.1f} s, flow {b_f:.1f} s ({b_f - b_d:+.1f} s; "
              f"per repeat {', '.join(f'{inside(y) - inside(x):+.1f}' for x, y in zip(d, f))} s); "
              f"Prefect's server process used {median([x['server_cpu'] for x in f]):.1f} s CPU during the flow run; "
              f"the flow waited {median([x['server_wait'] for x in f]):.1f} s for it after its imports")
        print("\nper stage, median s:  " + "  ".join(
            f"{s} {median([x['stages'][s] for x in d]):.1f}/{median([x['stages'][s] for x in f]):.1f}"
            for s in d[0]["stages"]) + "   (direct/flow)")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nload average after: {load()}")


if __name__ == "__main__":
    sys.exit(main())
