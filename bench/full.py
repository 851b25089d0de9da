"""The whole DAG at full size: every stage on the full Fashion-MNIST train set x 10 per branch, default settings.

A scratch project with `ingest.n_per_class: null` (every raw train image left after the val and test splits:
57,800 of 60,000 at the defaults) and each branch's multiplier at `--multiplier` (default 10: about 1.73 M
augmented samples), everything else the project's params.yaml, then `--set`. Each stage runs as `dvc repro`
runs it, `augdag stage NAME` (with dvc.yaml's `--workers 2` for the traditional and mix branches), one process
after another; per stage the wall seconds, the rows it wrote, and its peak RSS (the kernel's ru_maxrss of that
process, from os.wait4) are printed, then the totals. A stage that fails stops the run with its log's tail.

    .venv/bin/python bench/full.py                                      # about 16 minutes on 2 cores
    .venv/bin/python bench/full.py --n-per-class 100 --multiplier 2     # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _util import BIN, env, fmt_bytes, load, machine_line, make_project

STAGES = ["ingest", "strategy", "traditional", "mix", "generative", "crossdomain",
          "quality", "merge", "finetune", "evaluate",
          "report"]
WORKERS = {"traditional": 2, "mix": 2}  # as dvc.yaml's cmds


def rows(root: Path, stage: str) -> int | None:
    """Rows the stage wrote (its summary's count), where it has one."""
    try:
        s = json.loads((root / "data" / stage / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if stage == "quality":
        return sum(s[b]["in"] for b in ("traditional", "mix", "generative"))
    if stage == "merge":  # per source: {"samples": n, "mass": w}
        return sum(v["samples"] for v in s.values() if isinstance(v, dict) and "samples" in v)
    for key in ("samples", "rows", "train"):
        if isinstance(s.get(key), int):
            return s[key]
    return None


def run_stage(root: Path, stage: str, log: Path) -> tuple[float, int]:
    cmd = [str(BIN / "augdag"), "-C", str(root), "stage", stage]
    if stage in WORKERS:
        cmd += ["--workers", str(WORKERS[stage])]
    t = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, cwd=root, env=env(), stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"stage {stage} failed; its log {log}:\n" + log.read_text()[-3000:])
    return wall, usage.ru_maxrss * 1024


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-per-class", type=int, default=None, help="train images per class (default: all)")
    ap.add_argument("--multiplier", type=int, default=10, help="variants per raw train image, each branch")
    ap.add_argument("--set", dest="extra", nargs="+", action="extend", default=[], metavar="KEY=VALUE")
    ap.add_argument("--stages", nargs="+", default=STAGES, choices=STAGES, metavar="STAGE")
    ap.add_argument("--workdir", help="scratch folder (default: a temporary one, removed at the end)")
    args = ap.parse_args(argv)
    print(machine_line())
    n = "null" if args.n_per_class is None else str(args.n_per_class)
    overrides = [f"ingest.n_per_class={n}"] + [f"strategy.{b}.{k}" for b in ("traditional", "mix", "generative")
                                               for k in ("enabled=true", f"multiplier={args.multiplier}")]
    overrides += args.extra
    print(f"params: the project's params.yaml + {' '.join(overrides)}")
    work = Path(args.workdir).resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="augdag-bench-full-"))
    try:
        root = make_project(work / "project", overrides)
        (work / "logs").mkdir(exist_ok=True)
        print(f"\n{'stage':<12} {'wall s':>8} {'rows':>10} {'rows/s':>8} {'peak RSS':>10}", flush=True)
        total, peak = 0.0, 0
        for stage in args.stages:
            wall, rss = run_stage(root, stage, work / "logs" / f"{stage}.log")
            r = rows(root, stage)
            total, peak = total + wall, max(peak, rss)
            rate = f"{r / wall:>8.0f}" if r else f"{'':>8}"
            print(f"{stage:<12} {wall:>8.1f} {r if r is not None else '':>10} {rate} {fmt_bytes(rss):>10}", flush=True)
        data = sum(f.stat().st_size for f in (root / "data").rglob("*") if f.is_file())
        print(f"{'all':<12} {total:>8.1f} {'':>10} {'':>8} {fmt_bytes(peak):>10}")
        print(f"\noutputs on disk: {fmt_bytes(data)}; load average after: {load()}")
        acc = root / "data" / "evaluate" / "metrics.json"
        if acc.exists():
            print(f"test accuracy: {json.loads(acc.read_text()).get('accuracy')}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
