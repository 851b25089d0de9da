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

STRATEGIES = ["dialogue_ctx0", "dialogue", "dialogue_traditional"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--strategies", nargs="+", default=STRATEGIES, choices=list(compare.STRATEGIES))
    ap.add_argument("--set", dest="extra", default="{}", help="JSON params merged into every run")
    ap.add_argument("--out", default="bench/out/dialogue")
    ap.add_argument("--resume", action="store_true", help="reuse runs cached in OUT/runs/ with the same params")
    args = ap.parse_args()
    logging.getLogger("augdag").setLevel(logging.WARNING)
    base = deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()),
                      yaml.safe_load((REPO / "configs" / "dialogue.yaml").read_text()))
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
            dl = rec.get("dialogue") or {}
            print(f"{strategy:>20} seed {seed}: test {rec['test_accuracy']} (first turns "
                  f"{dl.get('accuracy_first_turn')}, later {dl.get('accuracy_later_turns')}; "
                  f"{'ran' if ran else 'cached'}, {rec['wall_s']:.0f} s)", flush=True)
    agg = compare.aggregate(records, baseline="dialogue_ctx0")
    md = compare.markdown(agg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dialogue.md").write_text(md)
    (out / "records.json").write_text(json.dumps(records, indent=2))
    print(md)
    for strategy in args.strategies:
        rs = [r["dialogue"] for r in records if r["strategy"] == strategy and r.get("dialogue")]
        if rs:
            first = sum(r["accuracy_first_turn"] for r in rs) / len(rs)
            later = sum(r["accuracy_later_turns"] for r in rs) / len(rs)
            print(f"{strategy}: first turns {100 * first:.1f} %, later turns {100 * later:.1f} % "
                  f"({rs[0]['turns']} test turns, {rs[0]['dialogues']} dialogues)")


if __name__ == "__main__":
    main()
