"""Throughput of a stage's samples through a torch DataLoader (augdag.open_project(...).stage(name).dataset()).

Rows: DataLoader worker processes (0 = in the main process), with and without a resize-to-64 transform (the
one examples/train_your_own.py uses), the sampler drawing with the merge weights; each row iterates
`--epochs` epochs' worth of samples after one warm-up batch, median of `--repeats`. The ratio column is
samples/s over the 0-worker row of the same transform, in the same run.

    .venv/bin/python bench/dataset.py                       # after make demo: the default merged set
    .venv/bin/python bench/dataset.py --stage traditional --workers 0 2 --epochs 5
"""

from __future__ import annotations

import argparse
import platform
import time
from statistics import median

import torch

import augdag


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=".")
    ap.add_argument("--stage", default="merge")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    import importlib.util
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("train_your_own", Path(__file__).parent.parent / "examples" /
                                                  "train_your_own.py")
    example = importlib.util.module_from_spec(spec)
    sys.modules["train_your_own"] = example  # worker processes unpickle its transform by this name
    spec.loader.exec_module(example)

    stage = augdag.open_project(args.root).stage(args.stage)
    n = len(stage.manifest) * args.epochs
    print(f"{cpu_name()}, {torch.get_num_threads()} torch thread(s); stage {args.stage}: {len(stage.manifest)} "
          f"samples x {args.epochs} epochs, batch {args.batch_size}, weighted sampler")
    head = f"{'transform':<22} {'workers':>7} {'median s':>9} {'samples/s':>10} {'vs 0 workers':>13}"
    print(head)
    print("-" * len(head))
    for name, tf in (("none (uint8 CxHxW)", None), ("resize 64, normalise", example.transforms(64))):
        base = None
        for workers in args.workers:
            ds = stage.dataset(transform=tf)
            times = []
            for _ in range(args.repeats):
                loader = torch.utils.data.DataLoader(
                    ds, batch_size=args.batch_size, num_workers=workers, persistent_workers=False,
                    sampler=stage.sampler(num_samples=n + args.batch_size, generator=torch.Generator().manual_seed(0)))
                it = iter(loader)
                next(it)  # warm-up: worker start-up is not counted
                t0 = time.perf_counter()
                count = sum(len(b[3]) for b in it)
                times.append(time.perf_counter() - t0)
            rate = count / median(times)
            base = base or rate
            print(f"{name:<22} {workers:>7} {median(times):>9.3f} {rate:>10.0f} {rate / base:>12.2f}x", flush=True)


if __name__ == "__main__":
    main()
