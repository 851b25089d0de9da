"""What DVC costs: a no-op `dvc repro` on a finished project, and hashing a large augmented set.

1. No-op repro. A finished project: `--project DIR` (checked first with `dvc status dvc.yaml`; the
   script refuses a project that is not up to date, so it never runs a stage there), or by default a
   scratch copy of this project (params.yaml + `--set`) finished with one untimed `dvc repro`. Then,
   `--repeats` times each (median): `dvc repro dvc.yaml` (checked to run nothing), `dvc status
   dvc.yaml`, and `dvc --version` (DVC's start-up alone, the floor of any dvc command).

2. Hashing. `--samples` random uint8 images of `--image` (default 600,000 x 28x28x1: the full
   Fashion-MNIST train set with multiplier 10) written as a stage writes them: `.npy` shards of
   `--shard-size` samples (default params.yaml's ingest.shard_size) in `shards/`, in a scratch DVC
   repo. Per repeat, from a cold DVC state (cache, state database and .dvc file removed):
   - `dvc add --no-commit`: hashing alone (md5 of every file, plus the directory's .dir object);
   - `dvc commit`: moving the files into the cache (hashes come from the state database);
   - `dvc status`: with the hashes cached (a stat per file);
   - `dvc add`: hash and cache in one command, as a user runs it.
   Beside them, in this process, hashlib's md5 over the same files (read + hash, one thread): the
   ratio says how far DVC is from the hashing floor. The files were just written, so they are in the
   page cache: this measures CPU cost, not the disk (dropping the page cache needs root and would
   disturb other work). DVC hashes with `core.checksum_jobs` threads (default max(1, min(4, cores/2))),
   and copies into the cache (`cache.type` reflink,copy: a copy on ext4). MB = 10^6 bytes.

Every timed figure is a separate `dvc` process, so DVC's start-up (the `dvc --version` row) is in it.

    .venv/bin/python bench/dvc_costs.py                      # default params; 600,000 x 28x28x1 (~470 MB)
    .venv/bin/python bench/dvc_costs.py --project .           # no-op repro on this (finished) project
    .venv/bin/python bench/dvc_costs.py --skip-repro --samples 100000 --image 224x224x3   # ~15 GB
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from _util import REPO, fmt_bytes, load, machine_line, make_project, median, sh, spread


def timed(cmd: list[str], cwd: Path, check: bool = True) -> tuple[float, str]:
    t = time.perf_counter()
    res = sh(cmd, cwd, check=check)
    return time.perf_counter() - t, res.stdout + res.stderr


def bench_repro(args, work: Path) -> None:
    if args.project:
        proj = Path(args.project).resolve()
        _, out = timed(["dvc", "status", "dvc.yaml"], proj)
        if "up to date" not in out:
            raise SystemExit(f"{proj}: `dvc status dvc.yaml` is not clean, so `dvc repro` would run stages; "
                             f"finish the project first (dvc repro) or leave out --project.\n{out}")
        print(f"\nno-op repro on {proj} (dvc status: up to date)")
    else:
        proj = make_project(work / "project", args.extra)
        t, out = timed(["dvc", "repro", "dvc.yaml"], proj)
        print(f"\nno-op repro on a scratch project (params.yaml + {' '.join(args.extra) or 'no overrides'}); "
              f"finished with one dvc repro in {t:.1f} s (not counted)")
    rows = {"dvc repro dvc.yaml (no-op)": ["dvc", "repro", "dvc.yaml"],
            "dvc status dvc.yaml": ["dvc", "status", "dvc.yaml"],
            "dvc --version (start-up only)": ["dvc", "--version"]}
    times = {k: [] for k in rows}
    for _ in range(args.repeats):
        for name, cmd in rows.items():
            t, out = timed(cmd, proj)
            if cmd[1] == "repro" and "Running stage" in out:
                raise SystemExit(f"dvc repro ran a stage; not a no-op:\n{out}")
            times[name].append(t)
    head = f"{'command':<32} {'median s':>9} {'min-max s':>13}"
    print(head)
    print("-" * len(head))
    for name, ts in times.items():
        print(f"{name:<32} {median(ts):>9.2f} {spread(ts):>13}")
    outs = sum(f.stat().st_size for f in (proj / "data").rglob("*") if f.is_file()) if (proj / "data").exists() else 0
    print(f"(the project's data/: {fmt_bytes(outs)})")


def write_shards(folder: Path, samples: int, shape: tuple[int, int, int], shard_size: int) -> tuple[int, int]:
    """Random uint8 shards in the stage-output format; returns (files, bytes)."""
    shards = folder / "shards"
    shards.mkdir(parents=True)
    n_files = total = 0
    for i, start in enumerate(range(0, samples, shard_size)):
        n = min(shard_size, samples - start)
        a = np.random.default_rng(i).integers(0, 256, (n, *shape), dtype=np.uint8)
        path = shards / f"shard-{i:05d}.npy"
        np.save(path, a, allow_pickle=False)
        n_files += 1
        total += path.stat().st_size
    return n_files, total


def md5_floor(folder: Path) -> float:
    t = time.perf_counter()
    for path in sorted(folder.rglob("*.npy")):
        h = hashlib.md5()
        with path.open("rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    return time.perf_counter() - t


def bench_hash(args, work: Path) -> None:
    repo = work / "hashrepo"
    site = work / "site-cache"
    repo.mkdir()
    sh(["dvc", "init", "-q", "--no-scm"], repo)
    sh(["dvc", "config", "core.analytics", "false"], repo)
    sh(["dvc", "config", "core.check_update", "false"], repo)
    sh(["dvc", "config", "core.site_cache_dir", str(site)], repo)
    if args.checksum_jobs:
        sh(["dvc", "config", "core.checksum_jobs", str(args.checksum_jobs)], repo)
    shape = args.image
    t = time.perf_counter()
    n_files, nbytes = write_shards(repo / "aug", args.samples, shape, args.shard_size)
    jobs = args.checksum_jobs or max(1, min(4, (os.cpu_count() or 1) // 2))
    print(f"\nhashing: {args.samples} samples of {'x'.join(map(str, shape))} in {n_files} shards of "
          f"{args.shard_size}: {nbytes / 1e6:.0f} MB ({fmt_bytes(nbytes)}), written in "
          f"{time.perf_counter() - t:.1f} s; "
          f"DVC checksum_jobs {jobs}")

    def reset():
        for p in (repo / "aug.dvc", repo / ".dvc" / "cache", site):
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    rows = ["dvc add --no-commit (hash only)", "dvc commit (into the cache)", "dvc status (hashes cached)",
            "dvc add (hash + cache)", "hashlib md5, one thread (floor)"]
    times = {k: [] for k in rows}
    for _ in range(args.repeats):
        reset()
        times[rows[0]].append(timed(["dvc", "add", "--no-commit", "aug"], repo)[0])
        times[rows[1]].append(timed(["dvc", "commit", "-f", "aug.dvc"], repo)[0])
        t, out = timed(["dvc", "status", "aug.dvc"], repo)
        if "up to date" not in out:
            raise SystemExit(f"dvc status after commit is not clean:\n{out}")
        times[rows[2]].append(t)
        reset()
        times[rows[3]].append(timed(["dvc", "add", "aug"], repo)[0])
        times[rows[4]].append(md5_floor(repo / "aug"))
    floor = nbytes / 1e6 / median(times[rows[4]])
    head = f"{'command':<34} {'median s':>9} {'min-max s':>13} {'MB/s':>8} {'vs md5 floor':>13}"
    print(head)
    print("-" * len(head))
    for name, ts in times.items():
        rate = nbytes / 1e6 / median(ts)
        print(f"{name:<34} {median(ts):>9.2f} {spread(ts):>13} {rate:>8.0f} {rate / floor:>12.2f}x")


def parse_image(text: str) -> tuple[int, int, int]:
    try:
        h, w, c = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HxWxC, e.g. 28x28x1") from None
    return h, w, c


def main(argv=None):
    from augdag.params import load_params

    default_shard = load_params(REPO / "params.yaml").ingest.shard_size
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", dest="extra", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                    help="params overrides for the scratch project of the no-op repro (default: none)")
    ap.add_argument("--project", help="time the no-op repro on this finished project instead of a scratch one")
    ap.add_argument("--samples", type=int, default=600_000, help="samples in the hashed set (default 600000)")
    ap.add_argument("--image", type=parse_image, default=(28, 28, 1), help="HxWxC of each sample (default 28x28x1)")
    ap.add_argument("--shard-size", type=int, default=default_shard,
                    help=f"samples per shard (default: params.yaml's ingest.shard_size, {default_shard})")
    ap.add_argument("--checksum-jobs", type=int, help="DVC core.checksum_jobs (default: DVC's own)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-repro", action="store_true")
    ap.add_argument("--skip-hash", action="store_true")
    ap.add_argument("--workdir", help="scratch folder (default: a temporary one, removed at the end)")
    args = ap.parse_args(argv)

    print(machine_line())
    dvc_version = sh(["dvc", "--version"], REPO).stdout.strip()
    print(f"DVC {dvc_version}; {args.repeats} repeats, medians, wall clock of each dvc process")
    work = Path(args.workdir).resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="augdag-bench-dvc-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if not args.skip_repro:
            bench_repro(args, work)
        if not args.skip_hash:
            bench_hash(args, work)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nload average after: {load()}")


if __name__ == "__main__":
    main()
