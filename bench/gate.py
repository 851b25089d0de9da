"""Speed and agreement of augdag.imquality's batched PSNR + SSIM against a per-image skimage loop.

For each case, the same (source, augmented) pairs go through `psnr_batch` + `ssim_batch` and through
a loop of `skimage.metrics.peak_signal_noise_ratio` + `structural_similarity(channel_axis=-1)`; each
side is timed best of `--repeats` (wall clock). Prints the machine, the torch thread counts, and a
table with the speed ratio and the largest absolute differences. The target is a ratio >= 10.

The default is one torch thread: the skimage loop runs on one core, so that is the like-for-like
comparison, and on a machine whose cores are busy with other work, intra-op threads make every one
of the many small torch ops wait at a barrier for a descheduled thread (seen: 2 threads on 2 busy
cores, ~100x slower than 1). `--threads 1 2` adds rows for each count.

    .venv/bin/python bench/gate.py
    .venv/bin/python bench/gate.py --threads 1 4
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from augdag.imquality import psnr_batch, ssim_batch

from _util import cpu_model  # noqa: E402  (bench/ is sys.path[0] when a script runs)

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
    return psnr_batch(a, b), ssim_batch(a, b)


def loop(a, b):
    p = np.array([peak_signal_noise_ratio(x, y) for x, y in zip(a, b)])
    s = np.array([structural_similarity(x, y, channel_axis=-1) for x, y in zip(a, b)])
    return p, s


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ap.add_argument("--threads", type=int, nargs="+", default=[1], help="torch thread counts to run (default: 1)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    print(f"machine: {cpu_model()}; {os.cpu_count()} logical cores, {cores} usable by this process; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"torch {torch.__version__} (threads set explicitly per row; torch's default here: "
          f"{torch.get_num_threads()}); numpy {np.__version__}; best of {args.repeats} repeats, wall clock")
    print()
    head = f"{'N':>6} {'image':>11} {'threads':>7} {'batched s':>10} {'skimage s':>10} {'ratio':>7} {'>=10x':>6} " \
           f"{'max|dPSNR|':>11} {'max|dSSIM|':>11}"
    print(head)
    print("-" * len(head))
    for n, h, w, c in CASES:
        a, b = pairs(n, h, w, c)
        t_s, (p_s, s_s) = best_of(lambda: loop(a, b), args.repeats)
        assert np.isfinite(p_s).all(), "benchmark pairs must differ (finite PSNR)"
        for threads in args.threads:
            torch.set_num_threads(threads)
            batched(a[:4], b[:4])  # warm-up (first allocations)
            t_b, (p_b, s_b) = best_of(lambda: batched(a, b), args.repeats)
            ratio = t_s / t_b
            print(f"{n:>6} {f'{h}x{w}x{c}':>11} {torch.get_num_threads():>7} {t_b:>10.3f} {t_s:>10.3f} {ratio:>6.1f}x "
                  f"{'yes' if ratio >= TARGET else 'NO':>6} {np.abs(p_b - p_s).max():>11.2e} "
                  f"{np.abs(s_b - s_s).max():>11.2e}", flush=True)
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
