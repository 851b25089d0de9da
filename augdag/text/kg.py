"""Knowledge-graph enrichment on WordNet 3.0's synset graph: entity linking, enriched embeddings, and the
related entities a mention may be rewritten with.

Linking, as the source document does it, by embedding similarity:

- **Mentions** are the text's word tokens (augdag.text.ops' lossless tokenisation) of letters only, two or
  more long, not a stop word, that have a noun synset in WordNet (its morphy finds the base of a plural) and
  whose noun senses are used at least as often as any other part of speech in WordNet's sense counts
  (SemCor): "film" and "plot" are mentions, "good" and "make" are not. A capitalised word inside a sentence
  (usually a name: "Spielberg", "Paris") needs only a noun synset.
- **Candidates** are the mention's first `max_senses` noun synsets (WordNet lists them by frequency).
- **The link** is the candidate whose gloss embedding (the sentence encoder on "lemma, lemma: definition")
  has the highest cosine with the whole text's embedding; kept when that cosine is at least `min_similarity`.
  A text keeps its `max_entities` best-scoring links (ties: first in the text).

Entity vectors are those gloss embeddings (L2-normalised, 384 floats from all-MiniLM-L6-v2): WordNet has no
trained graph embedding (TransE and the like need a training run and a larger graph), and the encoder puts
glosses and texts in one space, which the document's sum `embedding + w * sum(entity vectors)` needs.

`enrich(pooled, sums, weight)` is the document's `l2_normalize(embedding + w * sum(entity vectors))` on the
L2-normalised pooled embedding, scaled back to the pooled embedding's norm; weight 0, or a text without a
link, gives the classifier exactly the embedding it had without enrichment.

Related entities (`related`): a synset's hypernyms ("comedy" -> "drama"; a named instance's class) and its
siblings (the other hyponyms of those hypernyms: "comedy" -> "tragedy"; for a named instance the other
instances of its class: "Spielberg" -> "Coppola"), optionally only the `nearest` by gloss similarity, as
single-word lemma names of letters (a sibling a name for a name), sorted, the mention's own lemmas left out.

Everything is deterministic: embeddings run one text at a time (augdag.text.encoder), candidates and
lemmas come in WordNet's order or sorted, and a similarity is compared as float64 of float32 embeddings.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from augdag.text.ops import STOPWORDS, Tokens, _sentence_initial, detokenize, tokenize

RELATIONS = ("hypernym", "sibling")
_WORD = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True)
class Link:
    """A mention (token `index`, its text) linked to a synset, with the cosine that chose it."""

    index: int
    mention: str
    synset: str
    similarity: float


def gloss(synset) -> str:
    """The text a synset is embedded as: its lemma names (spaces for underscores), then its definition."""
    names = ", ".join(n.replace("_", " ") for n in synset.lemma_names())
    return f"{names}: {synset.definition()}"


class Linker:
    """Links a text's noun mentions to WordNet synsets by embedding similarity (see the module doc).

    wn: NLTK's WordNet reader (default: the prepared copy, augdag.text.assets.wordnet). embed: texts ->
    L2-normalised float32 [N, D] (default: augdag.text.encoder.embed on `encoder_path`). Embeddings of texts
    and glosses are cached per instance."""

    def __init__(self, wn=None, embed=None, *, max_senses: int = 8, min_similarity: float = 0.0,
                 max_entities: int = 8, encoder_path: str | Path | None = None):
        if wn is None:
            from augdag.text.assets import wordnet

            wn = wordnet()
        if embed is None:
            from augdag.text import encoder

            def embed(texts):
                return encoder.embed(texts, path=encoder_path)
        if not isinstance(max_senses, int) or max_senses < 1:
            raise ValueError(f"max_senses must be an integer >= 1, got {max_senses!r}")
        if not isinstance(max_entities, int) or max_entities < 1:
            raise ValueError(f"max_entities must be an integer >= 1, got {max_entities!r}")
        if not -1.0 <= float(min_similarity) <= 1.0:
            raise ValueError(f"min_similarity must be in [-1, 1], got {min_similarity!r}")
        self.wn, self._embed = wn, embed
        self.max_senses, self.min_similarity, self.max_entities = max_senses, float(min_similarity), max_entities
        self._vectors: dict[str, np.ndarray] = {}
        self._links: dict[str, list[Link]] = {}
        self._sums: dict[str, np.ndarray] = {}
        self._senses: dict[str, list] = {}
        # NLTK's reader shares one open file per part of speech: no interleaved lookups (Prefect's threads)
        self._lock = threading.RLock()

    # -- WordNet --------------------------------------------------------------------------------

    def senses(self, word: str, capitalised_name: bool = False) -> list:
        """The candidate noun synsets of a word ([] when it is not a noun mention)."""
        key = f"{word.lower()}|{int(capitalised_name)}"
        with self._lock:
            hit = self._senses.get(key)
            if hit is None:
                w = word.lower()
                nouns = self.wn.synsets(w, pos="n")
                if nouns and not capitalised_name:
                    def uses(synsets):
                        return sum(lemma.count() for s in synsets for lemma in s.lemmas()
                                   if lemma.name().lower() in self._forms(w, s.pos()))
                    others = [uses(self.wn.synsets(w, pos=p)) for p in ("v", "a", "s", "r")]
                    if uses(nouns) < max(others):
                        nouns = []
                hit = nouns[:self.max_senses]
                self._senses[key] = hit
            return hit

    def _forms(self, word: str, pos: str) -> set[str]:
        return {word, *self.wn._morphy(word, "a" if pos == "s" else pos)}

    def mention_indices(self, t: Tokens) -> list[int]:
        """Token indices of the mentions of a tokenised text, in order."""
        out = []
        for i, (w, kind) in enumerate(zip(t.toks, t.kinds)):
            if kind != "word" or len(w) < 2 or not _WORD.fullmatch(w) or w.lower() in STOPWORDS:
                continue
            name = w[0].isupper() and not _sentence_initial(t, i)
            if self.senses(w, capitalised_name=name):
                out.append(i)
        return out

    # -- embeddings -----------------------------------------------------------------------------

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised embeddings of texts (cached)."""
        todo = sorted({t for t in texts if t not in self._vectors})
        if todo:
            for t, v in zip(todo, self._embed(todo)):
                self._vectors[t] = np.asarray(v, np.float32)
        return np.stack([self._vectors[t] for t in texts]) if len(texts) else np.zeros((0, 0), np.float32)

    def entity_vector(self, synset_name: str) -> np.ndarray:
        with self._lock:
            s = self.wn.synset(synset_name)
        return self.vectors([gloss(s)])[0]

    # -- linking --------------------------------------------------------------------------------

    def link(self, text: str) -> list[Link]:
        """The text's links, best `max_entities` by similarity, returned in text order."""
        hit = self._links.get(text)
        if hit is not None:
            return hit
        t = tokenize(text)
        found = []
        idx = self.mention_indices(t)
        if idx:
            ctx = self.vectors([detokenize(t)])[0].astype(np.float64)
            for i in idx:
                w = t.toks[i]
                cands = self.senses(w, capitalised_name=w[0].isupper() and not _sentence_initial(t, i))
                with self._lock:
                    glosses = [gloss(s) for s in cands]
                sims = self.vectors(glosses).astype(np.float64) @ ctx
                best = int(np.argmax(sims))  # first of equal maxima: WordNet's more frequent sense
                if sims[best] >= self.min_similarity:
                    found.append(Link(i, w, cands[best].name(), round(float(sims[best]), 6)))
        keep = sorted(range(len(found)), key=lambda k: (-found[k].similarity, k))[:self.max_entities]
        links = [found[k] for k in sorted(keep)]
        self._links[text] = links
        return links

    def entity_sum(self, text: str) -> np.ndarray:
        """Sum of the entity vectors of the text's links (zeros without a link), float32 [D]; cached per text, as
        the fine-tune asks for the same texts every step."""
        hit = self._sums.get(text)
        if hit is None:
            links = self.link(text)
            if links:
                hit = np.sum([self.entity_vector(k.synset) for k in links], axis=0, dtype=np.float32)
            else:  # the width of the encoder's vectors, from any text's
                hit = np.zeros(self.vectors(["entity"]).shape[1], np.float32)
            self._sums[text] = hit
        return hit

    # -- related entities -----------------------------------------------------------------------

    def related(self, synset_name: str, relation: str, nearest: int | None = None) -> list[tuple[str, str]]:
        """(lemma, synset name) pairs related to a synset by `relation` (hypernym | sibling), sorted.

        With `nearest`, only the `nearest` related synsets whose glosses are closest to the synset's own gloss
        (cosine; ties by name) give lemmas. A sibling's lemma has the case of the synset's own first lemma (a
        name for a name: "Spielberg" -> "Coppola"; a common noun for a common noun), a hypernym's the case of
        its own ("Spielberg" -> "filmmaker", "Indian" -> "Asian")."""
        if relation not in RELATIONS:
            raise ValueError(f"relation must be one of {RELATIONS}, got {relation!r}")
        with self._lock:
            s = self.wn.synset(synset_name)
            ups = s.hypernyms() + s.instance_hypernyms()
            if relation == "hypernym":
                targets = ups
            elif s.instance_hypernyms():  # a named instance: the other instances of its class
                targets = [h for u in ups for h in u.instance_hyponyms() if h != s]
            else:
                targets = [h for u in ups for h in u.hyponyms() if h != s]
            targets = sorted(set(targets), key=lambda h: h.name())
            own = {n.lower() for n in s.lemma_names()}
            name = s.lemma_names()[0][:1].isupper()
            glosses = [gloss(h) for h in targets]
            mine = gloss(s)
        if nearest is not None and len(targets) > nearest:
            sims = self.vectors(glosses).astype(np.float64) @ self.vectors([mine])[0].astype(np.float64)
            order = sorted(range(len(targets)), key=lambda k: (-sims[k], targets[k].name()))[:nearest]
            targets = [targets[k] for k in order]
        pairs = set()
        for h in targets:
            cap = name if relation == "sibling" else h.lemma_names()[0][:1].isupper()
            pairs.update((n, h.name()) for n in h.lemma_names()
                         if len(n) > 1 and _WORD.fullmatch(n) and n.lower() not in own
                         and (n[:1].isupper() if cap else n.islower()))
        return sorted(pairs)


def enrich(pooled, sums, weight: float):
    """`||e|| * l2n(l2n(e) + weight * sums)` row-wise, for torch tensors [N, D] (see the module doc)."""
    import torch

    if weight == 0:
        return pooled
    sums = sums.to(pooled.dtype)
    norm = pooled.norm(dim=-1, keepdim=True)
    unit = pooled / norm.clamp_min(1e-12)
    out = norm * torch.nn.functional.normalize(unit + weight * sums, dim=-1)
    return torch.where((sums != 0).any(-1, keepdim=True), out, pooled)  # no link: the embedding as it was


@lru_cache(maxsize=4)
def default_linker(max_senses: int = 8, min_similarity: float = 0.0, max_entities: int = 8,
                   encoder_path: str | None = None) -> Linker:
    """One Linker per setting and process (the caches are what make a stage fast)."""
    return Linker(max_senses=max_senses, min_similarity=min_similarity, max_entities=max_entities,
                  encoder_path=encoder_path)


def linker_for(p) -> Linker:
    """The linker of a run's params (`text.kg`; the fine-tune's encoder, so entity vectors share its space)."""
    k = p.text.kg
    return default_linker(k.max_senses, k.min_similarity, k.max_entities, p.text.finetune.encoder_path)
