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

from augdag import numerics

numerics.pin()  # before torch and numpy load, as the augdag command does: the runs' bytes are a pinned run's

from augdag.env import set_offline  # noqa: E402

set_offline()

import yaml  # noqa: E402
from _util import REPO, run_strategies, strategy_args  # noqa: E402

from augdag.params import deep_merge  # noqa: E402

STRATEGIES = ["none", "kg_embed", "kg_rewrite_x4"]


def main() -> None:
    args = strategy_args(__doc__, STRATEGIES, "bench/out/kg").parse_args()
    base = deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()), {"modality": "text"})
    run_strategies(base, args, "kg", lambda r: f"test {r['test_accuracy']}; gate pass {r.get('gate_pass_rate')}")


if __name__ == "__main__":
    main()
