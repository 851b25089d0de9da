"""The dialogue stage on texts (params `text.dialogue`; the chain and its draws: augdag/text/dialogue.py).

Reads the merged set (the raw train texts and the kept variants; embedding-Mixup pairs have no text and are
left out) and the held-out splits of ingest, and writes one manifest row per turn:

- sample_id `dlg-<split><dialogue:05d>-t<turn>`, split train | val | test, branch `dialogue`, label the
  turn's intent, text the utterance, parent_ids [the merged or raw row it was drawn from];
- op_params {"dialogue", "turn", "intent", "p" (the transition's probability), "previous" (the sample ids of
  the dialogue's earlier turns, oldest first)}; seed the run's seed.

The fine-tune and evaluate stages read a turn with its `text.dialogue.context` previous turns.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from augdag.errors import DataError
from augdag.layout import classes
from augdag.log import logger
from augdag.params import Params
from augdag.storage import atomic_dir, read_manifest, sample_weights, text_hash, write_json, write_manifest
from augdag.tasks import out_dir
from augdag.tasks._text import _frame, _raw

SPLITS = ("train", "val", "test")


def pools(p: Params, root: Path, raw: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Per split, the rows turns draw from, sorted by sample id: train = the merged texts, val / test = raw
    (the ingest manifest, read here unless given)."""
    merged = read_manifest(out_dir(root, "merge"))
    raw = _raw(root) if raw is None else raw
    out = {"train": merged[merged.text.notna()].assign(weight=lambda f: sample_weights(f.weight))}
    for split in ("val", "test"):
        out[split] = raw[raw.split == split]
    return {k: v.sort_values("sample_id", kind="stable").reset_index(drop=True) for k, v in out.items()}


def check_intents(p: Params, names: list[str]) -> None:
    unknown = sorted(set(p.text.dialogue.transitions) - set(names))
    if unknown:
        raise DataError(f"params text.dialogue.transitions: intents {unknown} are not classes of the ingested set "
                        f"({names})")


def simulate_split(p: Params, names: list[str], pool: pd.DataFrame, split: str, n: int | None = None):
    """The split's dialogues (augdag.text.dialogue.simulate) over its pool; n: only the first n (replay)."""
    from augdag.text import dialogue

    d = p.text.dialogue
    chain = dialogue.Chain(d.start, d.transitions)
    by_intent = {k: pool[pool.label == names.index(k)] for k in chain.intents}
    weighted = split == "train"
    sizes = {k: (v.weight.to_numpy() if weighted else len(v)) for k, v in by_intent.items()}
    n = n or (d.dialogues if split == "train" else d.eval_dialogues)
    try:
        dialogues = dialogue.simulate(chain, sizes, n, d.max_turns, p.seed, split, weighted)
    except ValueError as e:
        raise DataError(f"dialogue: {e} (params text.dialogue; the {split} split of the ingested set)") from None
    return chain, by_intent, dialogues


def dialogue(p: Params, root: Path) -> dict:
    d = p.text.dialogue
    rows = []
    summary = {"enabled": d.enabled, "dialogues": 0, "turns": 0, "note": "off in params (text.dialogue.enabled)"}
    if d.enabled:
        names = classes(root)
        check_intents(p, names)
        raw = _raw(root)
        source = dict(zip(raw.sample_id, raw.source))
        per_split = {}
        for split, pool in pools(p, root, raw).items():
            if split != "train" and pool.empty:
                continue
            chain, by_intent, dialogues = simulate_split(p, names, pool, split)
            variants = 0
            for dl in dialogues:
                ids = []
                for t in dl:
                    parent = by_intent[t.intent].iloc[t.row]
                    variants += "~" in parent.sample_id
                    sid = f"dlg-{split}{t.dialogue:05d}-t{t.turn}"
                    op = {"dialogue": f"{split}{t.dialogue:05d}", "turn": t.turn, "intent": t.intent, "p": t.p,
                          "previous": list(ids)}
                    rows.append(dict(sample_id=sid, split=split, branch="dialogue", label=names.index(t.intent),
                                     parent_ids=[parent.sample_id], source=source.get(parent.sample_id.split("~")[0]),
                                     op_params=json.dumps(op), seed=p.seed, content_hash=text_hash(parent.text),
                                     text=parent.text))
                    ids.append(sid)
            lengths = [len(dl) for dl in dialogues]
            per_split[split] = {"dialogues": len(dialogues), "turns": sum(lengths),
                                "mean_turns": round(sum(lengths) / len(lengths), 4),
                                "pool": {k: len(v) for k, v in by_intent.items()}}
            if split == "train":
                per_split[split]["transitions_seen"] = chain.empirical(dialogues)
                per_split[split]["variants_used"] = variants
        summary = {"enabled": True, "dialogues": sum(s["dialogues"] for s in per_split.values()),
                   "turns": len(rows), "context": d.context, "max_turns": d.max_turns, "splits": per_split}
        logger().info("dialogue: %s", {k: (v["dialogues"], v["turns"]) for k, v in per_split.items()})
    with atomic_dir(out_dir(root, "dialogue")) as tmp:
        write_manifest(tmp / "manifest.parquet", _frame(rows) if rows else [])
        write_json(tmp / "summary.json", summary)
    return summary


def run(p: Params, root: Path, **_) -> dict:
    return dialogue(p, Path(root))


def turns(root: Path, split: str, context: int, m: pd.DataFrame | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The split's turns (manifest rows, in dialogue and turn order) and what the classifier reads for each;
    m: the dialogue manifest, read here unless given."""
    from augdag.text.dialogue import compose

    m = read_manifest(out_dir(root, "dialogue")) if m is None else m
    texts = dict(zip(m.sample_id, m.text))
    m = m[m.split == split]
    ops = [json.loads(o) for o in m.op_params]
    return m, [compose(t, [texts[i] for i in o["previous"]], context) for t, o in zip(m.text, ops)]


def replay(root: Path, r: dict, params: Params | None = None) -> dict:
    """A turn's text is its parent's (the merged or raw row it was drawn from); with `params`, whether the chain
    draws the same intent and the same parent for this turn again."""
    from augdag import tasks

    parent = r["parent_ids"][0]
    _, prow = tasks.find(root, parent)
    out = {"stored_hash": text_hash(r["text"]), "replayed_hash": text_hash(prow["text"])}
    if params is not None:
        op = r["op_params"] if isinstance(r["op_params"], dict) else json.loads(r["op_params"])
        split, d = r["split"], int(op["dialogue"][len(r["split"]):])
        names = classes(root)
        _, by_intent, dialogues = simulate_split(params, names, pools(params, root)[split], split, n=d + 1)
        turn = dialogues[d][op["turn"]] if op["turn"] < len(dialogues[d]) else None
        out["params_redrawn_match"] = (turn is not None and turn.intent == op["intent"]
                                       and by_intent[turn.intent].iloc[turn.row].sample_id == parent)
    return out
