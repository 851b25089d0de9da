"""Helpers shared by the issue-7 benchmark scripts in bench/ (not a benchmark itself).

The scripts import it as a sibling module (`python bench/<script>.py` puts bench/ first on sys.path).
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# What a stage's cmd and deps need in a scratch project (the same list as tests/conftest.py's make_project).
PROJECT_FILES = ["dvc.yaml", "params.yaml", "tasks", "augdag", "expectations", "flows", ".dvcignore"]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_line() -> str:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        mem_s = f", {mem:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        mem_s = ""
    return (f"machine: {cpu_model()}; {os.cpu_count()} logical cores, {usable} usable by this process{mem_s}; "
            f"load average {load()}")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def median(xs) -> float:
    return statistics.median(xs)


def spread(xs) -> str:
    """'min-max' of a list of seconds, for the table's spread column."""
    return f"{min(xs):.3g}-{max(xs):.3g}"


def env() -> dict:
    """The environment for child processes: the venv's bin first on PATH, offline switches set."""
    from augdag.env import OFFLINE

    e = {**OFFLINE, **os.environ}
    e["PATH"] = f"{BIN}:{e.get('PATH', '')}"
    return e


def sh(cmd: list[str], cwd: Path, check: bool = True, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env={**env(), **(env_extra or {})}, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd} ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


def make_project(dest: Path, overrides: list[str] | None = None) -> Path:
    """A scratch copy of the project (git + DVC initialised), the project's params.yaml with `overrides`
    (KEY=VALUE, as `augdag run --set`) written in, validated. Mirrors tests/conftest.py's make_project."""
    from augdag.params import dotted_to_nested, write_overrides

    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    if overrides:
        write_overrides(dest / "params.yaml", dotted_to_nested(list(overrides)))
    sh(["git", "init", "-q"], dest)
    sh(["dvc", "init", "-q"], dest)
    if (REPO / ".dvc" / "plots").is_dir():  # dvc.yaml's plot templates
        shutil.copytree(REPO / ".dvc" / "plots", dest / ".dvc" / "plots", dirs_exist_ok=True)
    sh(["dvc", "config", "core.analytics", "false"], dest)
    sh(["dvc", "config", "core.check_update", "false"], dest)
    return dest


def chunk_kw(params) -> dict:
    """The chunk size the stage code gets from the CLI and the flow: params.runner.chunk_size where the
    params have a `runner` section, else the stage functions' own default."""
    runner = getattr(params, "runner", None)
    return {"chunk_size": runner.chunk_size} if runner is not None and hasattr(runner, "chunk_size") else {}


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


# --- the strategy benches (crossdomain.py, kg.py, dialogue.py): augdag compare's runs, cached, paired -----------

def strategy_args(doc: str, strategies: list[str], out: str):
    """The command line they share (a caller may add its own options before parsing)."""
    import argparse

    from augdag import compare

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--strategies", nargs="+", default=strategies, choices=list(compare.STRATEGIES))
    ap.add_argument("--set", dest="extra", default="{}", help="JSON params merged into every run")
    ap.add_argument("--out", default=out)
    ap.add_argument("--resume", action="store_true", help="reuse runs cached in OUT/runs/ with the same params")
    return ap


def run_strategies(base: dict, args, name: str, line=None, baseline: str = "none") -> list[dict]:
    """Every (seed, strategy) of `args` on the params dict `base` (+ `args.extra`) through augdag.compare's cached
    runs; prints a line per run (`line(rec)` says what; default the test accuracy), then the comparison table,
    written to OUT/<name>.md with the records in OUT/records.json. Returns the records."""
    import json
    import logging
    import time

    from augdag import compare

    logging.getLogger("augdag").setLevel(logging.WARNING)
    extra, out = json.loads(args.extra), Path(args.out)
    print(machine_line(), flush=True)
    records = []
    for seed in args.seeds:
        for strategy in args.strategies:
            t0 = time.monotonic()
            params = compare.resolve(base, strategy, seed, extra)
            rec, ran = compare.run_cached(params, strategy, seed, out, base_dir=REPO, force=not args.resume)
            rec["wall_s"] = round(time.monotonic() - t0, 1)
            records.append(rec)
            what = line(rec) if line else f"test {rec['test_accuracy']}"
            print(f"{strategy:>24} seed {seed}: {what} ({'ran' if ran else 'cached'}, {rec['wall_s']:.0f} s)",
                  flush=True)
    md = compare.markdown(compare.aggregate(records, baseline=baseline))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(md)
    (out / "records.json").write_text(json.dumps(records, indent=2))
    print(md)
    return records
