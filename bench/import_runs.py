"""Turn finished bench run folders into `augdag compare` records, refusing any whose params differ.

bench/seeds.py (before it wrapped augdag.compare) kept each run's folder as OUT/<strategy>-seed<n>/
and its row in OUT/seeds.jsonl. A comparison strategy may be the same params under another name
(`traditional_gate` is `traditional`; `none` with online TrivialAugmentWide is
`trivial_augment_wide`). This script resolves both names, requires equal params hashes, reads the
record from the folder exactly as a compare run reads it, and writes it to OUT/runs/, where
`augdag compare --out OUT` then finds it instead of running it again.

    .venv/bin/python bench/import_runs.py --to bench/out_compare \\
        bench/out2:traditional_gate=traditional \\
        bench/out_trivial:none:'{"finetune":{"online_augment":"trivial_augment_wide"}}'=trivial_augment_wide

Each source is DIR:BENCH_STRATEGY[:EXTRA_JSON]=COMPARISON_STRATEGY.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from augdag import compare
from augdag.storage import write_json


def import_folder(src: Path, bench_name: str, extra: dict, target: str, out: Path, seeds: list[int],
                  assume_equal: bool = False) -> list[str]:
    rows = {}
    jsonl = src / "seeds.jsonl"
    if jsonl.exists():
        for line in jsonl.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                rows[(r["strategy"], r["seed"])] = r
    done = []
    for seed in seeds:
        folder = src / f"{bench_name}-seed{seed}"
        if not (folder / "data" / "evaluate" / "metrics.json").exists():
            continue
        had = compare.resolve({}, bench_name, seed, extra)
        want = compare.resolve({}, target, seed)
        h = compare.params_hash(want)
        if compare.params_hash(had) != h and not assume_equal:
            raise SystemExit(f"{folder}: its params differ from {target!r} seed {seed}; not imported")
        row = rows.get((bench_name, seed), {})
        rec = compare.record_from_folder(folder, target, seed, h, row.get("stage_seconds", {}), row.get("seconds"))
        write_json(compare.record_path(out, target, seed, h), rec)
        done.append(f"{target} seed {seed} <- {folder} (test {rec['test_accuracy']:.4f}, val {rec['val_accuracy']})")
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--to", required=True, help="the augdag compare --out folder")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--assume-equal", action="store_true",
                    help="import even when today's params for the bench name differ: only for folders made before "
                         "the difference existed (e.g. `all` runs from before the quality gate are `all_nogate`), "
                         "after checking that a rerun reproduces some of them exactly")
    ap.add_argument("sources", nargs="+", metavar="DIR:BENCH_STRATEGY[:EXTRA_JSON]=STRATEGY")
    args = ap.parse_args()
    for spec in args.sources:
        left, target = spec.rsplit("=", 1)
        parts = left.split(":", 2)
        extra = json.loads(parts[2]) if len(parts) > 2 else {}
        for line in import_folder(Path(parts[0]), parts[1], extra, target, Path(args.to), args.seeds,
                                  args.assume_equal):
            print(line)
    return None


if __name__ == "__main__":
    sys.exit(main())
