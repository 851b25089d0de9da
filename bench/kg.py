"""Knowledge-graph enrichment for text (issue 32): the enriched embedding and the entity-rewrite branch,
against no augmentation, over seeds, through the DAG.

Each run is `augdag compare`'s run of one strategy and seed on the repository's params.yaml with
`modality: text` (Rotten Tomatoes fresh vs rotten, 20 train / 20 validation / 200 test texts per class,
MiniLM fine-tuned 60 steps of 16 on one thread):

- none: the raw train texts;
- kg_embed: the same texts, the classifier fed `||e|| * l2n(l2n(e) + 0.3 * sum(entity vectors))`;
- kg_rewrite_x4: 4 variants per text by the entity rewrite alone (a linked mention -> a hypernym or a
  sibling), through the text gate (its checks filter, as in compare's strategies);
- traditional_x4 (optional): EDA x4, the text branch that exists, for reference.

Prints the compare table (test accuracy mean ± 95% CI, paired differences against none), the seconds per
run, and for the rewrite the gate's pass rate. Records are cached in OUT/runs/ (--resume reuses them).

    .venv/bin/python bench/kg.py --seeds 0 1 2 3 4
    .venv/bin/python bench/kg.py --seeds 0 --strategies none kg_embed --set '{"text": {"finetune": {"steps": 2}}}'
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from augdag import numerics

numerics.pin()  # before torch and numpy load, as the augdag command does: the runs' bytes are a pinned run's

from augdag.env import set_offline  # noqa: E402

set_offline()

import yaml  # noqa: E402
from _util import REPO, machine_line  # noqa: E402

from augdag import compare  # noqa: E402
from augdag.params import deep_merge  # noqa: E402

STRATEGIES = ["none", "kg_embed", "kg_rewrite_x4"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--strategies", nargs="+", default=STRATEGIES, choices=list(compare.STRATEGIES))
    ap.add_argument("--set", dest="extra", default="{}", help="JSON params merged into every run")
    ap.add_argument("--out", default="bench/out/kg")
    ap.add_argument("--resume", action="store_true", help="reuse runs cached in OUT/runs/ with the same params")
    args = ap.parse_args()
    logging.getLogger("augdag").setLevel(logging.WARNING)
    base = deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()), {"modality": "text"})
    extra, out = json.loads(args.extra), Path(args.out)
    print(machine_line(), flush=True)
    records = []
    for seed in args.seeds:
        for strategy in args.strategies:
            t0 = time.monotonic()
            params = compare.resolve(base, strategy, seed, extra)
            rec, ran = compare.run_cached(params, strategy, seed, out, base_dir=REPO, force=not args.resume)
            records.append(rec)
            rec["wall_s"] = round(time.monotonic() - t0, 1)
            print(f"{strategy:>16} seed {seed}: test {rec['test_accuracy']} ({'ran' if ran else 'cached'}, "
                  f"{rec['wall_s']:.0f} s; gate pass {rec.get('gate_pass_rate')})", flush=True)
    agg = compare.aggregate(records)
    md = compare.markdown(agg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kg.md").write_text(md)
    (out / "records.json").write_text(json.dumps(records, indent=2))
    print(md)


if __name__ == "__main__":
    main()
