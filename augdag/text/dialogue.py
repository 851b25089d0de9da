"""Simulated multi-turn dialogues: a seeded Markov chain over intents, and the context a classifier reads.

The source document simulates customer-service dialogues from a Markov decision process over intents
(enquiry -> {complaint 0.1, handle 0.6, exit 0.3}). Here the chain is params `text.dialogue`: `start`
(the first intent's distribution) and `transitions` (intent -> next intent or "end"), validated in
augdag/text/params.py. A dialogue:

1. draws its first intent from `start`, then each next one from the current intent's row, until "end" or
   `max_turns` turns;
2. fills each turn with an utterance of that intent from a pool: for training, the merged set's texts of
   the class (the raw train texts and the text branches' kept variants), drawn with their merge weights; for
   validation and test, the held-out real turns of the class, each used once before any is used again (a
   seeded permutation per intent, started again when it runs out).

Every draw of dialogue d comes from `rng(seed, "dialogue", split, d)` (the pools' permutations from
`rng(seed, "dialogue", split, "pool", intent)`), and the rows and the chain's keys are sorted, so the
dialogues do not depend on the order of the params' mappings or of the manifests.

The classifier reads a turn with its context (`compose`): the turn's text first, then the `context`
previous turns, most recent first, joined by the tokenizer's separator; truncation then drops the oldest
context, never the turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from augdag.seeding import rng

END = "end"
SEP = " [SEP] "


@dataclass(frozen=True)
class Turn:
    dialogue: int
    turn: int
    intent: str
    row: int  # index into the pool of the intent (see `simulate`)
    p: float  # the probability of this intent given the previous one (or of starting with it)


class Chain:
    """The intent chain: `start` and `transitions` as in params, keys sorted."""

    def __init__(self, start: Mapping[str, float], transitions: Mapping[str, Mapping[str, float]]):
        self.start = sorted(start.items())
        self.rows = {k: sorted(v.items()) for k, v in sorted(transitions.items())}
        for name, row in [("start", self.start), *self.rows.items()]:
            if abs(sum(p for _, p in row) - 1.0) > 1e-6 or any(p < 0 for _, p in row):
                raise ValueError(f"dialogue chain: row {name!r} is not a probability distribution: {dict(row)}")
            unknown = [k for k, _ in row if k != END and k not in self.rows]
            if unknown:
                raise ValueError(f"dialogue chain: row {name!r} leads to {unknown}, which have no row")

    @property
    def intents(self) -> list[str]:
        return list(self.rows)

    @staticmethod
    def _draw(g: np.random.Generator, row: list[tuple[str, float]]) -> tuple[str, float]:
        p = np.array([q for _, q in row], np.float64)
        k = int(g.choice(len(row), p=p / p.sum()))
        return row[k]

    def walk(self, g: np.random.Generator, max_turns: int) -> list[tuple[str, float]]:
        """(intent, probability) per turn of one dialogue."""
        out = [self._draw(g, self.start)]
        while len(out) < max_turns:
            nxt = self._draw(g, self.rows[out[-1][0]])
            if nxt[0] == END:
                break
            out.append(nxt)
        return out

    def empirical(self, dialogues: Sequence[Sequence[Turn]]) -> dict[str, dict[str, float]]:
        """Observed transition shares per intent (the last turn of a dialogue counts as a move to END, also when
        it stopped at max_turns)."""
        counts: dict[str, dict[str, int]] = {k: {} for k in self.rows}
        for d in dialogues:
            for a, b in zip(d, list(d[1:]) + [None]):
                key = b.intent if b is not None else END
                counts[a.intent][key] = counts[a.intent].get(key, 0) + 1
        return {k: {t: round(n / sum(v.values()), 4) for t, n in sorted(v.items())} for k, v in counts.items() if v}


def simulate(chain: Chain, pools: Mapping[str, Sequence[float] | int], n: int, max_turns: int, seed: int,
             split: str, weighted: bool) -> list[list[Turn]]:
    """n dialogues. pools: intent -> the pool's sampling weights (weighted=True: each turn draws a row with
    probability proportional to its weight) or its size (weighted=False: rows in a seeded permutation, each
    used once before any again). Every intent of the chain needs a non-empty pool (ValueError naming it)."""
    empty = [k for k in chain.intents if not (len(pools.get(k, ())) if weighted else pools.get(k, 0))]
    if empty:
        raise ValueError(f"dialogue chain: no utterances for intents {empty} in the {split} pool")
    queues: dict[str, list[int]] = {}
    rounds: dict[str, int] = {}

    def take(intent: str, g: np.random.Generator) -> int:
        if weighted:
            w = np.asarray(pools[intent], np.float64)
            return int(g.choice(len(w), p=w / w.sum()))
        if not queues.get(intent):
            r = rounds.get(intent, 0)
            queues[intent] = rng(seed, "dialogue", split, "pool", intent, r).permutation(pools[intent]).tolist()
            rounds[intent] = r + 1
        return queues[intent].pop(0)

    out = []
    for d in range(n):
        g = rng(seed, "dialogue", split, d)
        turns = []
        for k, (intent, p) in enumerate(chain.walk(g, max_turns)):
            turns.append(Turn(d, k, intent, take(intent, g), round(float(p), 6)))
        out.append(turns)
    return out


def compose(text: str, previous: Sequence[str], context: int) -> str:
    """What the classifier reads for a turn: its text, then up to `context` previous turns, most recent first."""
    if context <= 0 or not previous:
        return text
    return SEP.join([text, *reversed(list(previous)[-context:])])
