"""Rows per second of the whole quality stage at default settings, and where a row's time goes.

Builds a scratch project (Fashion-MNIST, `--n-per-class` train images per class, the traditional and mix
branches on with one variant each, generative off, then `--set`), runs ingest to mix, and then:

1. times `augdag stage quality` as `dvc repro` runs it (a fresh process: start-up, imports, the reference
   classifier's fit and Data Docs included), `--repeats` times: rows/s = rows scored / wall seconds;
2. runs the stage once more in this process under cProfile and splits its time by what the row's work is:
   reference fit, embedding + probe (the label check), reading images, alignment + PSNR/SSIM, the outlier window,
   Great Expectations' validation, writing the kept/rejected rows, Data Docs, and the rest (imports, summaries).
   cProfile's own cost inflates the Python-heavy parts a little; the shares, not the seconds, are the point.

    .venv/bin/python bench/gate_stage.py                        # 20,000 rows per branch (2,000 per class)
    .venv/bin/python bench/gate_stage.py --n-per-class 200 --repeats 1
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _util import machine_line, make_project, median, sh

PINNED = ["ingest.n_val_per_class=0", "strategy.traditional.enabled=true", "strategy.mix.enabled=true",
          "strategy.generative.enabled=false"]
# (label, function names whose cumulative time is that part); the first match of a frame's name counts
PARTS = [
    ("reference fit", ["scores.py:__init__"]),
    ("embedding + probe", ["scores.py:proba"]),
    ("reading images", ["shards.py:images", "__init__.py:_parent_images"]),
    ("alignment + PSNR/SSIM", ["scores.py:traditional_scores", "scores.py:mix_scores"]),
    ("outlier window", ["scoring.py:__call__"]),
    ("GE validation", ["checks.py:gate_frame"]),
    ("writing rows", ["manifest.py:write", "__init__.py:_scores_json"]),
    ("Data Docs", ["docs.py:build_data_docs"]),
]


def breakdown(stats: pstats.Stats, total: float) -> list[tuple[str, float]]:
    cum: dict[str, float] = {}
    for (file, _, fn), (_, _, _, ct, _) in stats.stats.items():
        key = f"{Path(file).name}:{fn}"
        cum[key] = cum.get(key, 0.0) + ct
    out, used = [], 0.0
    for label, names in PARTS:
        t = sum(cum.get(n, 0.0) for n in names)
        out.append((label, t))
        used += t
    out.append(("the rest (imports, summaries, checks)", max(0.0, total - used)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-per-class", type=int, default=2000, help="train images per class (default 2000)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--set", dest="extra", nargs="+", action="extend", default=[], metavar="KEY=VALUE")
    ap.add_argument("--workdir", help="scratch folder (default: a temporary one, removed at the end)")
    args = ap.parse_args(argv)
    print(machine_line())
    work = Path(args.workdir).resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="augdag-bench-gate-"))
    overrides = [f"ingest.n_per_class={args.n_per_class}", *PINNED, *args.extra]
    print(f"params: the project's params.yaml + {' '.join(overrides)}")
    try:
        root = make_project(work / "project", overrides)
        from augdag import numerics

        numerics.pin_from_params(root)
        import torch

        from augdag.params import load_params
        from augdag.tasks import run_stage

        p = load_params(root / "params.yaml")
        torch.set_num_threads(p.numerics.threads)
        for stage in ("ingest", "strategy", "traditional", "mix", "generative", "crossdomain"):
            run_stage(stage, p, root)
        walls = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            sh([str(Path(sys.executable).parent / "augdag"), "-C", str(root), "stage", "quality"], root)
            walls.append(time.perf_counter() - t)
        summary = json.loads((root / "data" / "quality" / "summary.json").read_text())
        rows = sum(summary[b]["in"] for b in ("traditional", "mix", "generative"))
        prof = cProfile.Profile()
        t = time.perf_counter()
        prof.enable()
        run_stage("quality", p, root)
        prof.disable()
        total = time.perf_counter() - t
        print(f"\nquality stage on {rows} rows ({summary['traditional']['in']} traditional, {summary['mix']['in']} "
              f"mix), reference {p.quality.reference_image_size} px, depth {p.quality.reference_depth}")
        print(f"  `augdag stage quality`, {args.repeats} runs: median {median(walls):.1f} s "
              f"({min(walls):.1f}-{max(walls):.1f}): **{rows / median(walls):.0f} rows/s**")
        print(f"  in-process under cProfile: {total:.1f} s ({rows / total:.0f} rows/s)\n")
        print(f"{'part':<40} {'s':>7} {'share':>6} {'us/row':>7}")
        for label, sec in breakdown(pstats.Stats(prof), total):
            print(f"{label:<40} {sec:>7.2f} {sec / total:>6.1%} {1e6 * sec / rows:>7.0f}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
