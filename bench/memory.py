"""Peak memory of the data stages as the train set grows tenfold.

For each `--n-per-class` value (default 600 and 6000 Fashion-MNIST train images per class, i.e. 6,000
and 60,000: the full train set; `ingest.n_val_per_class` is set to 0 so 6000 fits), one fresh
process runs ingest, strategy, traditional, mix, generative, quality and merge with the stage
functions (`augdag.tasks.run_stage`, the traditional and mix branches through a thread pool of
`--workers`, as dvc.yaml's `--workers 2`) in a scratch folder, on the project's params.yaml with the
traditional branch on (its multiplier as params.yaml has it) and mix and generative off (their stages
then write empty outputs), then `--set` (which may turn them on again).

Peak RSS is the kernel's figure for that process (`os.wait4`'s rusage, ru_maxrss: the largest
resident set it reached, its own waited-for children included). The child also records its
ru_maxrss after imports and after each stage, which shows the stage that set the peak. Printed:
per size the peak, the peak above the after-import level (Python, torch, pandas, augdag's params; the
stages' own lazy imports, Great Expectations and the model code, count as stage memory), the time, and
the ratio of each size's peak to the smallest size's (issue 7's target: within 1.3x for 10x data).

    .venv/bin/python bench/memory.py                                   # 6,000 and 60,000 train images
    .venv/bin/python bench/memory.py --n-per-class 100 1000            # a quick look
    .venv/bin/python bench/memory.py --set strategy.traditional.multiplier=10 strategy.mix.enabled=true
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _util import REPO, chunk_kw, env, fmt_bytes, load, machine_line

STAGES = ["ingest", "strategy", "traditional", "mix", "generative", "crossdomain", "quality", "merge"]
# Applied before --set: the traditional branch alone, whatever params.yaml turns on.
PINNED = ["strategy.traditional.enabled=true", "strategy.mix.enabled=false", "strategy.generative.enabled=false"]


def rss_now_max() -> int:
    """This process's peak RSS so far, bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(root: Path, n_per_class: int, extra: list[str], workers: int, result: Path, verbose: bool,
          stages: list[str]) -> None:
    from augdag.env import set_offline, tune_malloc

    set_offline()
    tune_malloc()  # as the augdag command does (AUGDAG_MALLOC=default turns it off, to compare)
    import logging
    from concurrent.futures import ThreadPoolExecutor

    import torch  # noqa: F401  (imported by the stages anyway; counted in the after-import level)

    from augdag.params import deep_merge, dotted_to_nested, load_params
    from augdag.tasks import run_stage

    logging.getLogger("augdag").setLevel(logging.INFO if verbose else logging.WARNING)
    overrides = deep_merge(dotted_to_nested(list(PINNED) + list(extra)),
                           {"ingest": {"n_per_class": n_per_class, "n_val_per_class": 0}})
    p = load_params(REPO / "params.yaml", overrides=overrides)
    out = {"after_import": rss_now_max(), "stages": {}}
    for name in stages:
        t = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            summary = run_stage(name, p, root, mapper=pool.map, **chunk_kw(p))
        out["stages"][name] = {"seconds": time.perf_counter() - t, "peak_after": rss_now_max(),
                               "samples": summary.get("samples") if isinstance(summary, dict) else None}
        if name == "ingest":
            out["train"] = summary["train"]
        result.write_text(json.dumps(out))  # after every stage: a long run that is stopped still shows its stages


def spawn(root: Path, n: int, extra: list[str], workers: int, work: Path, verbose: bool = False,
          stages: list[str] = STAGES) -> dict:
    result = work / f"n{n}.json"
    log = work / f"n{n}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--root", str(root), "--n-per-class", str(n),
           "--workers", str(workers), "--result", str(result)] + (["--set", *extra] if extra else []) + \
        (["--verbose"] if verbose else []) + ["--stages", *stages]
    t = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"n_per_class {n} failed ({proc.returncode}); its log: {log}\n" + log.read_text()[-3000:])
    return {**json.loads(result.read_text()), "peak": usage.ru_maxrss * 1024, "wall": wall}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-per-class", type=int, nargs="+", default=[600, 6000],
                    help="train images per class, one process each (at most 6000; default 600 6000)")
    ap.add_argument("--set", dest="extra", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                    help="params overrides on top of the project's params.yaml")
    ap.add_argument("--workers", type=int, default=2, help="thread pool per stage (dvc.yaml's branches use 2)")
    ap.add_argument("--workdir", help="scratch folder (default: a temporary one, removed at the end)")
    ap.add_argument("--verbose", action="store_true",
                    help="the stages' progress lines in each size's log (<workdir>/n<N>.log), for long runs")
    ap.add_argument("--stages", nargs="+", default=STAGES, choices=STAGES, metavar="STAGE",
                    help=f"the stages to run, in this order (default all: {' '.join(STAGES)}); a stage needs "
                         "the ones before it that feed it")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(Path(args.root), args.n_per_class[0], args.extra, args.workers, Path(args.result), args.verbose,
                     args.stages)

    print(machine_line())
    print(f"stages: {', '.join(args.stages)}; params: the project's params.yaml + "
          f"{' '.join([*PINNED, 'ingest.n_val_per_class=0', *args.extra])}; {args.workers} workers; "
          f"one process per size, one after another")
    work = Path(args.workdir).resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="augdag-bench-mem-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        runs = []
        for n in args.n_per_class:
            root = work / f"n{n}"
            if root.exists():
                shutil.rmtree(root)
            root.mkdir(parents=True)
            runs.append(spawn(root, n, args.extra, args.workers, work, args.verbose, args.stages))
            r = runs[-1]
            data = sum(f.stat().st_size for f in (root / "data").rglob("*") if f.is_file())
            r["data"] = data
            print(f"  {r['train']} train images: peak {fmt_bytes(r['peak'])} in {r['wall']:.1f} s", flush=True)
            shutil.rmtree(root, ignore_errors=True)
        print()
        head = (f"{'train images':>12} {'aug samples':>11} {'output on disk':>14} {'peak RSS':>10} "
                f"{'after imports':>13} {'peak - imports':>14} {'peak set by':>12} {'wall s':>7} {'peak ratio':>10} "
                f"{'above-imports ratio':>19}")
        print(head)
        print("-" * len(head))
        base = runs[0]
        for r in runs:
            top = max(r["stages"][s]["peak_after"] for s in args.stages)
            first = next(s for s in args.stages if r["stages"][s]["peak_after"] == top)
            aug = sum(r["stages"].get(b, {}).get("samples") or 0 for b in ("traditional", "mix", "generative"))
            above = r["peak"] - r["after_import"]
            base_above = base["peak"] - base["after_import"]
            print(f"{r['train']:>12} {aug:>11} {fmt_bytes(r['data']):>14} {fmt_bytes(r['peak']):>10} "
                  f"{fmt_bytes(r['after_import']):>13} {fmt_bytes(above):>14} {first:>12} {r['wall']:>7.1f} "
                  f"{r['peak'] / base['peak']:>9.2f}x {above / base_above if base_above > 0 else float('nan'):>18.2f}x")
        print(f"\n(ratios against {base['train']} train images; target for 10x data: peak ratio <= 1.3x)")
        print("per stage, seconds:  " + "; ".join(
            f"{r['train']}: " + " ".join(f"{s} {r['stages'][s]['seconds']:.1f}" for s in args.stages) for r in runs))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nload average after: {load()}")


if __name__ == "__main__":
    sys.exit(main())
