"""Test accuracy of the default low-resource fine-tune, per strategy, over several seeds.

A thin wrapper over augdag.compare (the same code as `augdag compare` and its Prefect flow): the stage
functions run directly (no Prefect, no DVC: they do not change the numbers) in scratch folders under
OUT, on params.yaml's defaults (not the project's params.yaml) + the strategy + the seed + --set.
Prints a table of mean +- std, appends each run to OUT/seeds.jsonl and writes OUT/seeds.json and
OUT/comparison.{json,csv,md,svg,html}.

    .venv/bin/python bench/seeds.py --seeds 0 1 2 3 4 --strategies none traditional
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path

from augdag.env import set_offline

set_offline()

from augdag import compare  # noqa: E402
from augdag.compare import STRATEGIES  # noqa: E402,F401  (the names this script accepts)


def run_one(out: Path, strategy: str, seed: int, extra: dict, resume: bool = False) -> dict:
    params = compare.resolve({}, strategy, seed, extra)
    rec, _ = compare.run_cached(params, strategy, seed, out, base_dir=Path.cwd(), force=not resume)
    return {**rec, "accuracy": rec["test_accuracy"]}  # `accuracy`: the name older seeds.jsonl rows use


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--strategies", nargs="+", default=["none", "traditional"], choices=list(STRATEGIES))
    ap.add_argument("--set", dest="extra", default="{}", help="JSON params merged into every run")
    ap.add_argument("--out", default="bench/out")
    ap.add_argument("--resume", action="store_true",
                    help="skip runs already in OUT/seeds.jsonl or cached in OUT/runs/ with the same params")
    args = ap.parse_args()
    logging.getLogger("augdag").setLevel(logging.WARNING)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    done = out / "seeds.jsonl"
    if args.resume and done.exists():
        rows = [json.loads(line) for line in done.read_text().splitlines() if line.strip()]
    for strategy in args.strategies:
        for seed in args.seeds:
            if any(r["strategy"] == strategy and r["seed"] == seed for r in rows):
                continue
            r = run_one(out, strategy, seed, json.loads(args.extra), args.resume)
            with done.open("a") as f:
                f.write(json.dumps(r) + "\n")
            print(f"{strategy:>15} seed {seed}: accuracy {r['accuracy']:.4f} macro-F1 {r['macro_f1']:.4f} "
                  f"({r['seconds']} s)", flush=True)
            rows.append(r)
    (out / "seeds.json").write_text(json.dumps(rows, indent=2))
    chosen = [r for s in args.strategies for r in rows if r["strategy"] == s and r["seed"] in args.seeds]
    compare.write_outputs(out, [{"test_accuracy": r["accuracy"], "val_accuracy": None, "params_hash": "", **r}
                                for r in chosen])
    base = {r["seed"]: r["accuracy"] * 100 for r in rows if r["strategy"] == "none"}
    print("\n| strategy | test accuracy (mean ± std) | macro-F1 (mean ± std) "
          "| vs none, paired (seeds better) | per seed |")
    print("|---|---|---|---|---|")
    for strategy in args.strategies:
        acc = [r["accuracy"] * 100 for r in rows if r["strategy"] == strategy and r["seed"] in args.seeds]
        f1 = [r["macro_f1"] * 100 for r in rows if r["strategy"] == strategy and r["seed"] in args.seeds]
        sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0  # noqa: E731
        seeds = [r["seed"] for r in rows if r["strategy"] == strategy and r["seed"] in args.seeds]
        diffs = [a - base[s] for a, s in zip(acc, seeds) if s in base]
        paired = (f"{statistics.mean(diffs):+.1f} ({sum(d > 0 for d in diffs)}/{len(diffs)})"
                  if diffs and strategy != "none" else "")
        print(f"| {strategy} | {statistics.mean(acc):.1f} ± {sd(acc):.1f} | {statistics.mean(f1):.1f} ± {sd(f1):.1f} | "
              f"{paired} | " + ", ".join(f"{a:.1f}" for a in acc) + " |")
    print(f"\n{out / 'comparison.md'}: the same runs with 95% CIs and validation accuracy (where recorded)")


if __name__ == "__main__":
    main()
