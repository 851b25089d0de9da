"""Simulated dialogues (issue 32): a context-aware intent classifier against the same classifier reading a turn
alone, over seeds, through the DAG.

Each run is `augdag compare`'s run of one strategy and seed on the repository's params.yaml with
configs/dialogue.yaml on top (MultiWOZ user turns of eight intents, 20 train / 20 validation / 200 test per
intent; 200 simulated training dialogues, 100 test dialogues of held-out real turns; MiniLM fine-tuned 60
steps of 16 on one thread):

- dialogue_ctx0: the turns alone (the baseline: a context-free intent classifier);
- dialogue: each turn with the previous one;
- dialogue_traditional: the same, the utterances also drawn from the traditional branch's kept variants.

All three are evaluated on the same test turns (the chain and the held-out pool do not depend on the
strategy), so the differences are paired. Prints the compare table, the accuracy on first and later turns
(a first turn has no context), and the seconds per run.

    .venv/bin/python bench/dialogue.py --seeds 0 1 2 3 4
    .venv/bin/python bench/dialogue.py --seeds 0 --set '{"text": {"finetune": {"steps": 2}}}' --out /tmp/d
"""

from __future__ import annotations

from augdag import numerics

numerics.pin()  # before torch and numpy load, as the augdag command does: the runs' bytes are a pinned run's

from augdag.env import set_offline  # noqa: E402

set_offline()

import yaml  # noqa: E402
from _util import REPO, run_strategies, strategy_args  # noqa: E402

from augdag.params import deep_merge  # noqa: E402

STRATEGIES = ["dialogue_ctx0", "dialogue", "dialogue_traditional"]


def line(rec: dict) -> str:
    dl = rec.get("dialogue") or {}
    return (f"test {rec['test_accuracy']} (first turns {dl.get('accuracy_first_turn')}, later "
            f"{dl.get('accuracy_later_turns')})")


def main() -> None:
    args = strategy_args(__doc__, STRATEGIES, "bench/out/dialogue").parse_args()
    base = deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()),
                      yaml.safe_load((REPO / "configs" / "dialogue.yaml").read_text()))
    records = run_strategies(base, args, "dialogue", line, baseline="dialogue_ctx0")
    for strategy in args.strategies:
        rs = [r["dialogue"] for r in records if r["strategy"] == strategy and r.get("dialogue")]
        if rs:
            first = sum(r["accuracy_first_turn"] for r in rs) / len(rs)
            later = sum(r["accuracy_later_turns"] for r in rs) / len(rs)
            print(f"{strategy}: first turns {100 * first:.1f} %, later turns {100 * later:.1f} % "
                  f"({rs[0]['turns']} test turns, {rs[0]['dialogues']} dialogues)")


if __name__ == "__main__":
    main()
