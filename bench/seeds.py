"""Test accuracy of the default low-resource fine-tune, per strategy, over several seeds.

Runs the stage functions directly (no Prefect, no DVC: they do not change the numbers) in scratch
folders under bench/out/. Prints a table of mean +- std and writes bench/out/seeds.json.

    .venv/bin/python bench/seeds.py --seeds 0 1 2 3 4 --strategies none traditional
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

from augdag.env import set_offline

set_offline()

from augdag.params import Params, deep_merge, parse_params  # noqa: E402
from augdag.tasks import run_stage  # noqa: E402

NO_TRAD = {"traditional": {"enabled": False}}
STRATEGIES = {
    "none": {"strategy": NO_TRAD},
    "traditional": {"strategy": {"traditional": {"enabled": True, "multiplier": 1}}},
    "traditional_x4": {"strategy": {"traditional": {"enabled": True, "multiplier": 4}}},
    "mixup_offline": {"strategy": {**NO_TRAD, "mix": {"enabled": True, "multiplier": 1}}, "mix": {"mode": "mixup"}},
    "cutmix_offline": {"strategy": {**NO_TRAD, "mix": {"enabled": True, "multiplier": 1}}, "mix": {"mode": "cutmix"}},
    "mixup_online": {"strategy": NO_TRAD, "finetune": {"online_mix": {"enabled": True, "mode": "mixup"}}},
    "cutmix_online": {"strategy": NO_TRAD, "finetune": {"online_mix": {"enabled": True, "mode": "cutmix"}}},
    "generative": {"strategy": {**NO_TRAD, "generative": {"enabled": True, "multiplier": 1}}},
    "all": {"strategy": {"traditional": {"enabled": True, "multiplier": 1}, "mix": {"enabled": True, "multiplier": 1},
                         "generative": {"enabled": True, "multiplier": 1}}},
}
TRAD = {"traditional": {"enabled": True, "multiplier": 1}}
OFF = ("psnr", "ssim", "label_consistency", "outlier")


def _gate(*on: str) -> dict:
    """Traditional branch with only the named filter checks of the quality gate on."""
    return {"strategy": TRAD, "quality": {"modes": {c: "off" for c in OFF if c not in on}}}


STRATEGIES.update({
    "traditional_nogate": _gate(),
    "traditional_gate": _gate(*OFF),
    "traditional_gate_psnr_ssim": _gate("psnr", "ssim"),
    "traditional_gate_label": _gate("label_consistency"),
    "traditional_gate_outlier": _gate("outlier"),
})
# The other branches with every filter check off; their gated form is the plain strategy name.
NOGATE = {"quality": {"modes": {c: "off" for c in OFF}}}
STRATEGIES.update({f"{name}_nogate": deep_merge(STRATEGIES[name], NOGATE)
                   for name in ("mixup_offline", "cutmix_offline", "generative", "all")})
STAGES = ["ingest", "strategy", "traditional", "mix", "generative", "quality", "merge", "finetune", "evaluate"]


def run_one(out: Path, strategy: str, seed: int, extra: dict) -> dict:
    params: Params = parse_params(deep_merge(deep_merge({"seed": seed}, STRATEGIES[strategy]), extra))
    root = out / f"{strategy}-seed{seed}"
    t0 = time.monotonic()
    stage_seconds = {}
    for stage in STAGES:
        t = time.monotonic()
        run_stage(stage, params, root)
        stage_seconds[stage] = round(time.monotonic() - t, 1)
    metrics = json.loads((root / "data" / "evaluate" / "metrics.json").read_text())
    gate = json.loads((root / "data" / "quality" / "summary.json").read_text())
    pass_rate = {b: v.get("pass_rate", 1.0 if v.get("kept") == v.get("in") else None) for b, v in gate.items()
                 if v.get("in")}
    return {"strategy": strategy, "seed": seed, "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "seconds": round(time.monotonic() - t0, 1), "stage_seconds": stage_seconds, "gate_pass_rate": pass_rate}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--strategies", nargs="+", default=["none", "traditional"], choices=list(STRATEGIES))
    ap.add_argument("--set", dest="extra", default="{}", help="JSON params merged into every run")
    ap.add_argument("--out", default="bench/out")
    ap.add_argument("--resume", action="store_true", help="skip runs already in OUT/seeds.jsonl")
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
            r = run_one(out, strategy, seed, json.loads(args.extra))
            with done.open("a") as f:
                f.write(json.dumps(r) + "\n")
            print(f"{strategy:>15} seed {seed}: accuracy {r['accuracy']:.4f} macro-F1 {r['macro_f1']:.4f} ({r['seconds']} s)",
                  flush=True)
            rows.append(r)
    (out / "seeds.json").write_text(json.dumps(rows, indent=2))
    base = {r["seed"]: r["accuracy"] * 100 for r in rows if r["strategy"] == "none"}
    print("\n| strategy | test accuracy (mean ± std) | macro-F1 (mean ± std) | vs none, paired (seeds better) | per seed |")
    print("|---|---|---|---|---|")
    for strategy in args.strategies:
        acc = [r["accuracy"] * 100 for r in rows if r["strategy"] == strategy and r["seed"] in args.seeds]
        f1 = [r["macro_f1"] * 100 for r in rows if r["strategy"] == strategy and r["seed"] in args.seeds]
        sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0
        seeds = [r["seed"] for r in rows if r["strategy"] == strategy and r["seed"] in args.seeds]
        diffs = [a - base[s] for a, s in zip(acc, seeds) if s in base]
        paired = (f"{statistics.mean(diffs):+.1f} ({sum(d > 0 for d in diffs)}/{len(diffs)})"
                  if diffs and strategy != "none" else "")
        print(f"| {strategy} | {statistics.mean(acc):.1f} ± {sd(acc):.1f} | {statistics.mean(f1):.1f} ± {sd(f1):.1f} | "
              f"{paired} | " + ", ".join(f"{a:.1f}" for a in acc) + " |")


if __name__ == "__main__":
    main()
