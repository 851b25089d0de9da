"""Clean and adversarial accuracy of fine-tuned models, with and without adversarial fine-tuning.

Each source is a finished bench run folder set, DIR:STRATEGY[:EXTRA_JSON]=LABEL (as bench/seeds.py left
them: DIR/<strategy>-seed<n>/data/...). For every seed the evaluate stage is run again, in a scratch
copy of the run folder, with `evaluate.robustness.n_samples = --n` (and the run's own params otherwise:
params.yaml's defaults + the strategy + the seed + EXTRA_JSON), so every model is attacked on the same
seeded test subset with the same FGSM/PGD settings. With --reuse, a folder whose own metrics.json already
holds robustness on --n samples (the run was made with these settings) is read instead of attacked again.
Prints a table (mean over seeds, and per seed); --json keeps the results, written after each folder, and a
rerun reads them back instead of evaluating a folder again.

    .venv/bin/python bench/robustness.py --seeds 0 1 2 --n 500 \\
        bench/out2:traditional_gate=standard \\
        'bench/out_adv:traditional_gate:{"finetune":{"adversarial":{"enabled":true}}}=adversarial'
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from augdag.env import set_offline

set_offline()

from augdag import compare  # noqa: E402
from augdag.params import deep_merge  # noqa: E402
from augdag.storage import write_json  # noqa: E402


def evaluate(folder: Path, strategy: str, seed: int, extra: dict, n: int) -> dict:
    """metrics.json robustness of the model in `folder`, evaluated again on `n` test samples."""
    from augdag.tasks import run_stage

    params = compare.resolve({}, strategy, seed, deep_merge(extra, {"evaluate": {"robustness": {
        "enabled": True, "n_samples": n}}}))
    with tempfile.TemporaryDirectory(prefix="augdag-robust-") as tmp:
        root = Path(tmp) / folder.name
        for part in ("ingest", "finetune"):  # all evaluate reads
            shutil.copytree(folder / "data" / part, root / "data" / part)
        run_stage("evaluate", params, root)
        metrics = json.loads((root / "data" / "evaluate" / "metrics.json").read_text())
    return {"accuracy": metrics["accuracy"], **metrics["robustness"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n", type=int, default=500, help="test samples attacked (evaluate.robustness.n_samples)")
    ap.add_argument("--json", type=Path, help="write the per-seed results here (and resume from them)")
    ap.add_argument("--reuse", action="store_true",
                    help="read a folder's own metrics.json robustness when it was measured on --n samples")
    ap.add_argument("sources", nargs="+", metavar="DIR:STRATEGY[:EXTRA_JSON]=LABEL")
    args = ap.parse_args()

    results: dict[str, dict[int, dict]] = {}
    done = json.loads(args.json.read_text()) if args.json and args.json.exists() else {}
    for spec in args.sources:
        left, label = spec.rsplit("=", 1)
        parts = left.split(":", 2)
        extra = json.loads(parts[2]) if len(parts) > 2 else {}
        results[label] = {}
        for seed in args.seeds:
            folder = Path(parts[0]) / f"{parts[1]}-seed{seed}"
            if not (folder / "data" / "finetune" / "model.safetensors").exists():
                print(f"{folder}: no model; skipped", file=sys.stderr)
                continue
            own = json.loads((folder / "data" / "evaluate" / "metrics.json").read_text())
            if str(seed) in done.get(label, {}):
                results[label][seed] = done[label][str(seed)]
            elif args.reuse and (own.get("robustness") or {}).get("n") == args.n:
                print(f"{label} seed {seed}: robustness from {folder}'s metrics.json", file=sys.stderr)
                results[label][seed] = {"accuracy": own["accuracy"], **own["robustness"]}
            else:
                print(f"{label} seed {seed}: evaluating {folder} on {args.n} samples", file=sys.stderr, flush=True)
                results[label][seed] = evaluate(folder, parts[1], seed, extra, args.n)
            if args.json:
                done.setdefault(label, {})[str(seed)] = results[label][seed]
                write_json(args.json, done)

    cols = [("accuracy", None, "test acc"), ("clean", None, "clean (subset)")]
    any_r = next((r for rs in results.values() for r in rs.values()), None)
    if any_r is None:
        print("no results")
        return 1
    for attack in ("fgsm", "pgd"):
        for eps in any_r.get(attack, {}):
            cols.append((attack, eps, f"{attack.upper()} eps {eps}"))

    def value(r: dict, key: str, eps: str | None) -> float:
        return r[key] if eps is None else r[key][eps]

    print(f"\n{'model':<14}" + "".join(f"{c[2]:>16}" for c in cols))
    for label, rs in results.items():
        vals = [[100 * value(r, k, e) for r in rs.values()] for k, e, _ in cols]
        print(f"{label:<14}" + "".join(f"{statistics.mean(v):>16.1f}" for v in vals))
        for seed, r in rs.items():
            print(f"{'  seed ' + str(seed):<14}" + "".join(f"{100 * value(r, k, e):>16.1f}" for k, e, _ in cols))
    labels = list(results)
    if len(labels) == 2:
        a, b = labels
        shared = sorted(set(results[a]) & set(results[b]))
        diffs = [statistics.mean(100 * (value(results[b][s], k, e) - value(results[a][s], k, e)) for s in shared)
                 for k, e, _ in cols]
        print(f"{b + ' - ' + a:<14}" + "".join(f"{d:>+16.1f}" for d in diffs) + f"   (paired, seeds {shared})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
