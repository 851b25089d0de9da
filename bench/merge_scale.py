"""Peak memory of the merge stage at a large row count, without an hour-long gate.

The full train set (60,000 images) through the traditional branch with `--multiplier` variants each, then the
gate's manifest written as the branch manifest with every row kept (a real quality stage over 1.8 M rows takes
about an hour here; merge reads only the gate's rows, not its scores), then merge in a fresh process. Prints
each stage's seconds and the process's peak RSS after it (ru_maxrss, which counts memory-mapped pages read).

    .venv/bin/python bench/merge_scale.py                     # 60,000 + 1,800,000 rows, ~10 min + ~5 min
    .venv/bin/python bench/merge_scale.py --multiplier 3 --workdir /tmp/ms
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _util import chunk_kw, make_project


def peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def fake_gate(root: Path) -> None:
    """data/quality/manifest.parquet: the traditional branch's rows, all kept."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from augdag.storage import read_table

    t = read_table(root / "data" / "traditional" / "manifest.parquet")
    t = t.set_column(t.schema.get_field_index("gate"), "gate", pa.array(["kept"] * t.num_rows))
    t = t.set_column(t.schema.get_field_index("scores"), "scores",
                     pa.array(['{"in_frame": 0.8123, "label_prob": 0.912345, "psnr": 31.2345, "ssim": 0.912345}']
                              * t.num_rows))
    (root / "data" / "quality").mkdir(parents=True, exist_ok=True)
    pq.write_table(t, root / "data" / "quality" / "manifest.parquet", compression="zstd")


def child(root: Path, stages: list[str]) -> None:
    from augdag.env import set_offline

    set_offline()
    import torch  # noqa: F401  (imported as a stage process has it)

    from augdag.params import load_params
    from augdag.tasks import run_stage

    p = load_params(root / "params.yaml")
    out = {"after_import": peak(), "stages": {}}
    for name in stages:
        t = time.perf_counter()
        if name == "gate":
            fake_gate(root)
        else:
            with ThreadPoolExecutor(max_workers=2) as pool:
                run_stage(name, p, root, mapper=pool.map, **chunk_kw(p))
        out["stages"][name] = {"seconds": round(time.perf_counter() - t, 1), "peak_rss_gib": round(peak() / 2**30, 2)}
    print(json.dumps(out), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--multiplier", type=int, default=30, help="traditional variants per train image (30: 1.8 M)")
    ap.add_argument("--workdir", default="/tmp/augdag-bench-merge", help="scratch project (kept for reruns)")
    ap.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    root = Path(args.workdir)
    if args.child is not None:
        return child(root, args.child)
    make_project(root, [f"strategy.traditional.multiplier={args.multiplier}", "strategy.traditional.enabled=true",
                        "strategy.mix.enabled=false", "strategy.generative.enabled=false", "ingest.n_per_class=6000",
                        "ingest.n_val_per_class=0"])
    for stages in (["ingest", "strategy", "traditional", "gate"], ["merge"]):  # merge in a process of its own
        subprocess.run([sys.executable, __file__, "--workdir", str(root), "--child", *stages], check=True)


if __name__ == "__main__":
    main()
