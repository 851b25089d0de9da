"""Export time and output size per format (issue 26): `augdag export STAGE --format F` on a default run and at
full Fashion-MNIST scale.

Two scales, each in a scratch copy of the project (bench/_util.make_project: tasks/, augdag/, dvc.yaml, ...;
git and DVC initialised), its stages run one by one as dvc.yaml's cmds run them (`augdag stage NAME`, the
branches with `--workers 2`):

- default: the project's params.yaml as it is (200 raw train images, all three branches, the gate); stages
  ingest .. merge, then `merge` is exported (raw train + the kept augmented samples, ~800 rows).
- full: `ingest.n_per_class=null` (every Fashion-MNIST train image left after the 20-per-class validation
  split: 59,800), the traditional branch alone with `--multiplier` variants each (default 10: 598,000 rows),
  mix and generative off; stages ingest, strategy, traditional, then the `traditional` stage is exported.
  Not `merge`: merge needs the quality gate, which on ~600k rows takes 30+ minutes on 2 cores, and merge's
  rows would be the traditional rows (all kept under the default warn-only gate) plus the 59,800 raw ones, so
  the export's cost per sample is the same. `--n-per-class N` measures a smaller train set.

Each export (per format, `--repeats` times) runs in a fresh Python process that imports augdag, datasets and
PIL first and then times `augdag.open_project(root).stage(STAGE).export(fmt, out)` alone (wall clock, the
manifest read and the hash check of every image included, the imports not; the whole `augdag export`
command adds about 1-2 s of imports). The output then gets `os.sync()` timed separately (the export itself
never fsyncs; the `sync s` column is the write-back the page cache still owed, with the whole machine's other
dirty pages too; the cache is flushed just before each export starts). The stage's shards were just
written, so the export reads them from the page cache: a cold read from disk would add to these figures.

Each repeat writes a new folder and the repeats' folders are deleted only after the format's last one: this
machine's disk is ext4 without a journal, where creating files soon after deleting many is slow (ext4_new_inode
skips every inode freed in the last minute, five while its inode-table block is dirty: `recently_deleted`), so
deleting 598,000 PNGs and exporting again at once took 2-3x as long, all of it system CPU. The figures are for
an export into a file system that has not just freed that many inodes.

Columns: export s (median of the repeats; spread min-max), samples/s, the export's CPU seconds in user and
system mode (wall well above user + sys means the process waited: for a core on a shared machine, or the
disk), MB = the files' sizes in 10^6 bytes (what the export reports), MB on disk = allocated blocks (`du`;
4 KiB per small file on ext4, which dominates ImageFolder's one PNG per sample), files, the export process's
peak RSS (the whole manifest is held in pandas), the sync after it, and the imports a fresh `augdag export`
process pays before its first sample (Prefect's ~1 s among them: augdag.log.Progress looks for a flow run).

    .venv/bin/python bench/export.py                                 # default scale, 3 repeats
    .venv/bin/python bench/export.py --scale full --full-repeats 3   # 598,000 traditional rows, ~15 min
    .venv/bin/python bench/export.py --scale both --formats hf webdataset
    .venv/bin/python bench/export.py --scale full --multiplier 2 --n-per-class 1000   # a quick look at "full"
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _util import REPO, env, load, machine_line, make_project, sh

FORMATS = ("imagefolder", "hf", "webdataset")
DEFAULT_STAGES = ["ingest", "strategy", "traditional", "mix", "generative", "crossdomain", "quality", "merge"]
FULL_STAGES = ["ingest", "strategy", "traditional"]
BRANCH_WORKERS = {"traditional": 2, "mix": 2}  # dvc.yaml's `--workers 2`


def full_overrides(multiplier: int, n_per_class: int | None) -> list[str]:
    return [f"ingest.n_per_class={'null' if n_per_class is None else n_per_class}",
            "strategy.traditional.enabled=true", f"strategy.traditional.multiplier={multiplier}",
            "strategy.mix.enabled=false", "strategy.generative.enabled=false"]


def run_stages(root: Path, stages: list[str]) -> dict[str, float]:
    """`augdag stage NAME` in `root`, one after another; seconds of each command."""
    seconds = {}
    for name in stages:
        t = time.perf_counter()
        cmd = [str(Path(sys.executable).parent / "augdag"), "-C", str(root), "stage", name]
        if name in BRANCH_WORKERS:
            cmd += ["--workers", str(BRANCH_WORKERS[name])]
        sh(cmd, root)
        seconds[name] = time.perf_counter() - t
        print(f"  stage {name}: {seconds[name]:.1f} s", flush=True)
    return seconds


def child(root: Path, stage: str, fmt: str, out: Path, result: Path) -> None:
    """One export in this process, imports done before the clock starts."""
    t_imports = time.perf_counter()
    import logging

    import augdag

    project = augdag.open_project(root)  # first: it sets the kernel caps before anything loads torch
    import PIL.Image  # noqa: F401
    import prefect.artifacts  # noqa: F401  (augdag.log.Progress looks for a Prefect run: ~1 s of imports)
    import prefect.context  # noqa: F401

    import augdag.export  # noqa: F401
    import augdag.storage  # noqa: F401
    import augdag.tasks  # noqa: F401

    if fmt == "hf":
        import datasets  # noqa: F401
        from datasets.arrow_writer import ArrowWriter  # noqa: F401
    logging.getLogger("augdag").setLevel(logging.WARNING)  # no progress lines in the bench's output
    imports = time.perf_counter() - t_imports
    after_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    summary = project.stage(stage).export(fmt, out)
    seconds = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    result.write_text(json.dumps({"seconds": seconds, "summary": summary, "after_import": after_import,
                                  "imports": imports, "user": r1.ru_utime - r0.ru_utime,
                                  "sys": r1.ru_stime - r0.ru_stime,
                                  "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def sizes(folder: Path) -> tuple[int, int, int]:
    """(bytes of the files, bytes allocated, number of files) under `folder`."""
    size = blocks = files = 0
    for dirpath, _, names in os.walk(folder):
        blocks += os.lstat(dirpath).st_blocks * 512
        for n in names:
            st = os.lstat(os.path.join(dirpath, n))
            size += st.st_size
            blocks += st.st_blocks * 512
            files += 1
    return size, blocks, files


def measure(root: Path, stage: str, fmt: str, repeats: int, work: Path) -> dict:
    runs, outs = [], []
    for i in range(repeats):
        # A new folder per repeat, the earlier ones kept until the last: on ext4 without a journal (this machine's
        # disk) creating files right after deleting many pays for it (ext4_new_inode skips inodes freed in the
        # last 60 s, 5 min while their inode-table block is dirty: `recently_deleted`); deleting each repeat's
        # 598,000 PNGs before the next tripled ImageFolder's time, all of it in system CPU.
        out = work / f"export-{fmt}-{i}"
        if out.exists():
            shutil.rmtree(out)
        outs.append(out)
        result = work / f"export-{fmt}.json"
        os.sync()  # the stage's (or the previous export's) dirty pages are not this export's cost
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(root), stage, fmt,
                               str(out), str(result)], cwd=REPO, env=env(), capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"export {stage} as {fmt} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        r = json.loads(result.read_text())
        t = time.perf_counter()
        os.sync()
        r["sync"] = time.perf_counter() - t
        r["bytes"], r["disk"], r["files"] = sizes(out)
        runs.append(r)
        print(f"  {fmt} #{i + 1}: {r['seconds']:.2f} s (CPU user {r['user']:.1f} s, sys {r['sys']:.1f} s; + sync "
              f"{r['sync']:.2f} s), {r['bytes'] / 1e6:.1f} MB, {r['files']} files; load {load()}", flush=True)
    for out in outs:
        shutil.rmtree(out)
    secs = [r["seconds"] for r in runs]
    last = runs[-1]
    return {"format": fmt, "count": last["summary"]["count"], "seconds": statistics.median(secs),
            "spread": f"{min(secs):.2f}-{max(secs):.2f}", "sync": statistics.median(r["sync"] for r in runs),
            "bytes": last["bytes"], "disk": last["disk"], "files": last["files"], "peak": max(r["peak"] for r in runs),
            "after_import": last["after_import"], "imports": statistics.median(r["imports"] for r in runs),
            "user": statistics.median(r["user"] for r in runs), "sys": statistics.median(r["sys"] for r in runs)}


def mb(n: int) -> str:
    return f"{n / 1e6:.1f}" if n >= 1e7 else f"{n / 1e6:.2f}"


def scale_case(name: str, args, work: Path) -> dict:
    if name == "default":
        overrides, stages, stage = [], DEFAULT_STAGES, "merge"
    else:
        overrides, stages, stage = full_overrides(args.multiplier, args.n_per_class), FULL_STAGES, "traditional"
    root = work / name
    print(f"{name}: project {root}; params.yaml + {' '.join(overrides) or '(nothing)'}; stages "
          f"{', '.join(stages)}; export {stage}", flush=True)
    make_project(root, overrides)
    stage_s = run_stages(root, stages)
    rows = [measure(root, stage, fmt, args.repeats if name == "default" else args.full_repeats, work)
            for fmt in args.formats]
    if not args.workdir:
        shutil.rmtree(root)  # now, not at the end: the full-scale project is GBs
    return {"scale": name, "stage": stage, "stage_seconds": stage_s, "rows": rows}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", choices=["default", "full", "both"], default="default")
    ap.add_argument("--multiplier", type=int, default=10, help="full scale: traditional variants per train image")
    ap.add_argument("--n-per-class", type=int, default=None,
                    help="full scale: train images per class (default: all, 5,980 after validation)")
    ap.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS), metavar="FORMAT",
                    help=f"formats to export (default all: {' '.join(FORMATS)})")
    ap.add_argument("--repeats", type=int, default=3, help="exports per format at default scale (median)")
    ap.add_argument("--full-repeats", type=int, default=1, help="exports per format at full scale")
    ap.add_argument("--workdir", help="scratch folder, kept with its projects (default: a temporary one, removed)")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        root, stage, fmt, out, result = args.child
        return child(Path(root), stage, fmt, Path(out), Path(result))

    t0 = time.perf_counter()
    print(machine_line())
    print(f"{sys.executable} bench/export.py {' '.join(argv if argv is not None else sys.argv[1:])}", flush=True)
    work = Path(args.workdir).resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="augdag-bench-export-"))
    work.mkdir(parents=True, exist_ok=True)
    cases = []
    try:
        for name in (["default", "full"] if args.scale == "both" else [args.scale]):
            cases.append(scale_case(name, args, work))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print(machine_line())
    head = (f"{'scale':<8} {'stage':<12} {'samples':>8} {'format':<12} {'export s':>9} {'spread':>12} "
            f"{'samples/s':>10} {'CPU user s':>10} {'CPU sys s':>9} {'MB':>8} {'MB on disk':>10} {'files':>8} "
            f"{'peak RSS MB':>11} {'sync s':>7} {'imports s':>9}")
    print(head)
    print("-" * len(head))
    for c in cases:
        for r in c["rows"]:
            print(f"{c['scale']:<8} {c['stage']:<12} {r['count']:>8} {r['format']:<12} {r['seconds']:>9.2f} "
                  f"{r['spread']:>12} {r['count'] / r['seconds']:>10.0f} {r['user']:>10.1f} {r['sys']:>9.1f} "
                  f"{mb(r['bytes']):>8} {mb(r['disk']):>10} {r['files']:>8} {r['peak'] / 1e6:>11.0f} {r['sync']:>7.2f} "
                  f"{r['imports']:>9.2f}")
    for c in cases:
        print(f"{c['scale']}: stages " + ", ".join(f"{k} {v:.1f} s" for k, v in c["stage_seconds"].items()))
    print(f"wall: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
