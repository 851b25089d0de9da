"""Each shardable stage on Dask: seconds with 1 and 2 worker processes against the local runner, same bytes.

A scratch project (Fashion-MNIST, `--n-per-class` train images per class, every branch on with
`--multiplier` variants, then `--set`) runs ingest, strategy and a generator checkpoint once; then each
shardable stage (traditional, mix, generative's sampling, quality's scoring) runs:

- local: as `dvc repro` runs it (the branches' chunks through a thread pool of 2, as dvc.yaml's `--workers 2`;
  generative and quality in-process, one job after another);
- on a `distributed.LocalCluster` of 1 and of 2 worker processes (one thread each, as the flow's runner
  makes them), the stage's shards submitted as Dask futures and taken back in order. This is the flow's
  `runner.kind: dask` path without Prefect's task bookkeeping (bench/prefect_overhead.py measures that).

Per stage and route: wall seconds; the speed-up over one worker; the seconds the workers computed (summed
over shards, timed inside each shard); and what moving shards costs: the bytes pickled to and from the
workers, and the seconds this process spent pickling them (timed separately on the same shards). After each
Dask run the stage's output files are compared with the local run's (sha256): a difference stops the bench.

The generative stage also trains its generator; with `generative.checkpoint` set to the first run's
checkpoint, every run samples from the same one and the time is sampling (plus loading and the quality
estimate). The cluster is started before the timings and kept across stages.

    .venv/bin/python bench/dask_shards.py                            # 6,000 train images x 2 per branch
    .venv/bin/python bench/dask_shards.py --n-per-class 100 --multiplier 1
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cloudpickle
from _util import machine_line, make_project

STAGES = ["traditional", "mix", "generative", "quality"]


def hashes(folder: Path) -> dict:
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file()}


def timed_shard(args):
    """Runs on a worker: (fn, chunk) -> (result, seconds)."""
    fn, chunk = args
    t = time.perf_counter()
    out = fn(chunk)
    return out, time.perf_counter() - t


def dask_mapper(client, log: dict):
    def mapper(fn, chunks):
        chunks = list(chunks)
        t = time.perf_counter()
        log["bytes_out"] += sum(len(cloudpickle.dumps((fn, c))) for c in chunks)
        log["pickle_s"] += time.perf_counter() - t
        futures = [client.submit(timed_shard, (fn, c), pure=False) for c in chunks]
        for f in futures:
            out, sec = f.result()
            log["compute_s"] += sec
            t = time.perf_counter()
            log["bytes_in"] += len(cloudpickle.dumps(out))
            log["pickle_s"] += time.perf_counter() - t
            yield out

    mapper.distributed = True
    return mapper


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-per-class", type=int, default=600)
    ap.add_argument("--multiplier", type=int, default=2)
    ap.add_argument("--set", dest="extra", nargs="+", action="extend", default=[], metavar="KEY=VALUE")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--workdir", help="scratch folder (default: a temporary one, removed at the end)")
    args = ap.parse_args(argv)
    print(machine_line())
    over = [f"ingest.n_per_class={args.n_per_class}", "ingest.n_val_per_class=0"] + [
        f"strategy.{b}.{k}" for b in ("traditional", "mix", "generative")
        for k in ("enabled=true", f"multiplier={args.multiplier}")] + args.extra
    print(f"params: the project's params.yaml + {' '.join(over)}")
    work = Path(args.workdir).resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="augdag-bench-dask-"))
    try:
        root = make_project(work / "project", over)
        from augdag import numerics

        numerics.pin_from_params(root)
        from concurrent.futures import ThreadPoolExecutor

        import torch
        from distributed import Client, LocalCluster

        from augdag.params import load_params
        from augdag.tasks import run_stage

        p = load_params(root / "params.yaml")
        torch.set_num_threads(p.numerics.threads)
        for stage in ("ingest", "strategy", "generative"):
            run_stage(stage, p, root)
        ckpt = work / "generator.safetensors"
        shutil.copyfile(root / "data" / "generative" / "generator.safetensors", ckpt)
        p = p.model_copy(update={"generative": p.generative.model_copy(update={"checkpoint": str(ckpt)})})
        results: dict = {}
        for stage in STAGES:
            t = time.perf_counter()
            with ThreadPoolExecutor(2) as pool:
                run_stage(stage, p, root, mapper=pool.map, chunk_size=p.runner.chunk_size)
            results[(stage, "local")] = {"wall": time.perf_counter() - t}
            results[(stage, "hash")] = hashes(root / "data" / stage)
        for n in args.workers:
            with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                    Client(cluster) as client:
                client.run(lambda: None)  # workers up before the clock starts
                for stage in STAGES:
                    log = {"bytes_out": 0, "bytes_in": 0, "pickle_s": 0.0, "compute_s": 0.0}
                    t = time.perf_counter()
                    run_stage(stage, p, root, mapper=dask_mapper(client, log), chunk_size=p.runner.chunk_size)
                    log["wall"] = time.perf_counter() - t - log["pickle_s"]  # the bench's own pickling left out
                    if hashes(root / "data" / stage) != results[(stage, "hash")]:
                        raise SystemExit(f"{stage} on {n} Dask worker(s) wrote other bytes than the local run")
                    results[(stage, n)] = log
        print(f"\n{'stage':<12} {'route':<12} {'wall s':>7} {'vs 1 worker':>11} {'worker compute s':>16} "
              f"{'MB to / from workers':>20} {'pickling s':>10}")
        for stage in STAGES:
            print(f"{stage:<12} {'local':<12} {results[(stage, 'local')]['wall']:>7.1f}")
            one = results.get((stage, 1), {}).get("wall")
            for n in args.workers:
                r = results[(stage, n)]
                ratio = f"{one / r['wall']:>10.2f}x" if one else f"{'':>11}"
                print(f"{stage:<12} {f'dask x{n}':<12} {r['wall']:>7.1f} {ratio} {r['compute_s']:>16.1f} "
                      f"{r['bytes_out'] / 1e6:>9.1f} / {r['bytes_in'] / 1e6:>8.1f} {r['pickle_s']:>10.2f}")
        print("\nevery Dask run wrote the local run's bytes (sha256 of every output file)")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
