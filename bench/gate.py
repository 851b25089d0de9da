"""Speed and agreement of augdag.imquality's batched PSNR + SSIM against a per-image skimage loop.

For each case, the same (source, augmented) pairs go through `psnr_batch` + `ssim_batch` and through
a loop of `skimage.metrics.peak_signal_noise_ratio` + `structural_similarity(channel_axis=-1)`; each
side is timed best of `--repeats` (wall clock). Prints the machine, the library versions, and a
table with the speed ratio and the largest absolute differences. The target is a ratio >= 10.

The pairs are uint8, as the gate's are, so the batched side runs imquality's compiled kernels (numba):
one thread, whatever torch's thread count; the warm-up call before the timing compiles them or loads
them from numba's on-disk cache. `--threads` sets torch's thread count, which only the float path
uses (`--float` adds rows for float64 inputs of the same values, data_range 255): on a machine whose
cores are busy with other work, torch's intra-op threads make every one of its many small ops wait at
a barrier for a descheduled thread (seen: 2 threads on 2 busy cores, ~100x slower than 1).

    .venv/bin/python bench/gate.py
    .venv/bin/python bench/gate.py --float --threads 1 2
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from _util import cpu_model  # noqa: E402  (bench/ is sys.path[0] when a script runs)
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from augdag.imquality import psnr_batch, ssim_batch

CASES = [(1000, 28, 28, 1), (5000, 28, 28, 1), (200, 224, 224, 3)]
TARGET = 10.0


def pairs(n, h, w, c, seed=0):
    """Source images with FMNIST-like structure (dark ground, bright textured blob) and an
    augmented version (brightness/contrast change plus noise); no pair is identical."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    src = np.empty((n, h, w, c), np.uint8)
    for i in range(n):
        cy, cx = g.uniform(0.3, 0.7) * h, g.uniform(0.3, 0.7) * w
        ry, rx = g.uniform(0.15, 0.4) * h, g.uniform(0.15, 0.4) * w
        blob = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        tex = 150 + 60 * np.sin(xx / g.uniform(1, 4)) * np.cos(yy / g.uniform(1, 4))
        img = np.where(blob[..., None], tex[..., None] * g.uniform(0.7, 1.0, c), g.uniform(0, 20, c))
        src[i] = np.clip(img + g.normal(0, 5, img.shape), 0, 255).round()
    x = src.astype(np.float64)
    x = (x - 128) * g.uniform(0.8, 1.2, (n, 1, 1, 1)) + 128 + g.uniform(-20, 20, (n, 1, 1, 1))
    aug = np.clip(x + g.normal(0, 8, src.shape), 0, 255).round().astype(np.uint8)
    return src, aug


def best_of(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def batched(a, b):
    return psnr_batch(a, b, data_range=255.0), ssim_batch(a, b, data_range=255.0)


def loop(a, b):
    p = np.array([peak_signal_noise_ratio(x, y) for x, y in zip(a, b)])
    s = np.array([structural_similarity(x, y, channel_axis=-1) for x, y in zip(a, b)])
    return p, s


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ap.add_argument("--threads", type=int, nargs="+", default=[1], help="torch thread counts to run (default: 1)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--float", action="store_true", help="add rows for float64 inputs (the torch path)")
    args = ap.parse_args(argv)
    import numba

    print(f"machine: {cpu_model()}; {os.cpu_count()} logical cores, {cores} usable by this process; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"numba {numba.__version__} (uint8 kernels, one thread); torch {torch.__version__} (float path; threads "
          f"set per row, torch's default here: {torch.get_num_threads()}); numpy {np.__version__}; "
          f"best of {args.repeats} repeats, wall clock")
    print()
    head = f"{'N':>6} {'image':>11} {'input':>7} {'threads':>7} {'batched s':>10} {'skimage s':>10} " \
           f"{'ratio':>7} {'>=10x':>6} {'max|dPSNR|':>11} {'max|dSSIM|':>11}"
    print(head)
    print("-" * len(head))
    for n, h, w, c in CASES:
        a, b = pairs(n, h, w, c)
        t_s, (p_s, s_s) = best_of(lambda: loop(a, b), args.repeats)
        assert np.isfinite(p_s).all(), "benchmark pairs must differ (finite PSNR)"
        rows = [("uint8", a, b, [args.threads[0]])]
        if args.float:
            rows.append(("float64", a.astype(np.float64), b.astype(np.float64), args.threads))
        for kind, x, y, thread_counts in rows:
            for threads in thread_counts:
                torch.set_num_threads(threads)
                batched(x[:4], y[:4])  # warm-up: compiles the kernels (or loads them), first allocations
                t_b, (p_b, s_b) = best_of(lambda: batched(x, y), args.repeats)
                ratio = t_s / t_b
                shown = threads if kind == "float64" else "-"
                print(f"{n:>6} {f'{h}x{w}x{c}':>11} {kind:>7} {shown:>7} {t_b:>10.3f} {t_s:>10.3f} {ratio:>6.1f}x "
                      f"{'yes' if ratio >= TARGET else 'NO':>6} {np.abs(p_b - p_s).max():>11.2e} "
                      f"{np.abs(s_b - s_s).max():>11.2e}", flush=True)
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
