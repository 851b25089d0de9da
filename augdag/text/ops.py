"""Text ops: EDA (Wei & Zou 2019), TF-IDF-aware synonym replacement and knowledge-graph entity rewriting, with
drawing kept apart from applying.

As for images (augdag/ops.py): `make_params(cfg, text, sample_seed, tfidf)` draws, for one sample, which
ops apply and their exact edits, each op from its own sub-generator
`augdag.seeding.rng(sample_seed, "text-op", op)`, and returns a JSON-able record; `apply(text, record)` is a
pure function of the source text and that record (no WordNet, no randomness), so every variant replays
from its lineage record. Ops run in the order of `OPS`, each on the output of the ones before.

Tokenisation (deterministic, lossless): the text is cut into tokens and the whitespace between them.
  - word: letters with inner apostrophes or hyphens ("film", "it's", "three-hour");
  - number: digits with inner . , : ("1968", "3.5");
  - any other non-space character is a token of its own (punctuation, symbols).
Each token keeps the whitespace that follows it (and the text its leading whitespace), so
`detokenize(tokenize(text)) == text` and an edit changes only what it touches: a replaced word keeps its
neighbours' spacing, punctuation never moves and is never deleted, only word tokens are swapped, inserted
or deleted. Deleting a token joins the gaps on its two sides (no gap if either side had none, e.g. before
a comma; else the longer one, so a line break survives).

Edits and indices: token indices count all tokens (words and punctuation) of the text as it stands just
before that edit; an op's edits apply in the order listed.
  synonym / tfidf_replace  {"index", "old", "new"} (+ "weight": the word's TF-IDF weight, for tfidf_replace)
  entity                   {"index", "old", "new", "synset", "similarity", "relation", "target"}: a mention
                           linked to `synset` (augdag/text/kg.py) replaced by a lemma of `target`, its
                           hypernym or sibling (a name by a name, a common noun by a common noun)
  insert                   {"index", "word", "source_index", "source"}: `word` (a synonym of the word
                           `source` at `source_index`) is inserted before token `index`
  swap                     {"i", "j", "a", "b"}: word tokens i < j (texts a, b) trade places
  delete                   {"index", "old"}: all listed tokens are deleted at once (indices before deletion)
`apply` checks that every `old`/`source`/`a`/`b` matches the text, so a record that does not belong to the
text fails with the edit and the token it found.

Which words are replaced (and which words' synonyms are inserted): a word of letters only, at least two
long, not an English stop word (NLTK's list, as EDA uses), either lower-case or capitalised at the start
of a sentence (first word, or after . ! ?): other capitalised words are usually names. Swap and delete act
on every word token.

Synonyms: WordNet 3.0 lemma names of every synset of the word (any part of speech, WordNet's morphy finds
the base of inflected forms), keeping single words of lower-case letters only: multi-word lemmas
("in_the_lead"), hyphenated ones and proper names are left out, so one word becomes one word and the
token structure stays simple. The word itself and its own base forms ("films" -> "film") are excluded.
Candidates are sorted, so the choice is the same draw on every machine; the replacement takes the
source word's capitalisation.

Counts: entity, synonym, tfidf_replace, insert and swap make n = max(1, round(alpha * words)) edits (round half
up; fewer when there are fewer candidates); delete drops each word with probability `rate`, never all of
them (one drawn word is kept), and nothing from a one-word text.

TF-IDF (`TfidfModel`): idf(w) = ln((1 + N) / (1 + df(w))) + 1 over the fitted texts' word tokens,
lower-cased (scikit-learn's TfidfVectorizer with smooth_idf, raw counts and l2 norm gives the same
weights); a word's weight in a text is tf * idf, l2-normalised over the text's words. A word never seen
in fitting gets the largest idf (rare = informative). `tfidf_replace` only replaces candidate words whose
weight is below `threshold`.
"""

from __future__ import annotations

import json
import math
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable

from augdag.seeding import rng as make_rng

# NLTK's English stop-word list (the list EDA filters with).
STOPWORDS = frozenset("""
i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves he him
his himself she she's her hers herself it it's its itself they them their theirs themselves what which who
whom this that that'll these those am is are was were be been being have has had having do does did doing
a an the and but if or because as until while of at by for with about against between into through during
before after above below to from up down in out on off over under again further then once here there when
where why how all any both each few more most other some such no nor not only own same so than too very s t
can will just don don't should should've now d ll m o re ve y ain aren aren't couldn couldn't didn didn't
doesn doesn't hadn hadn't hasn hasn't haven haven't isn isn't ma mightn mightn't mustn mustn't needn
needn't shan shan't shouldn shouldn't wasn wasn't weren weren't won won't wouldn wouldn't
""".split())

TOKEN_RE = re.compile(r"(?P<word>[^\W\d_]+(?:['’-][^\W\d_]+)*)|(?P<num>\d+(?:[.,:]\d+)*)|(?P<other>\S)")
_LETTERS = re.compile(r"[^\W\d_]+")
_LEMMA = re.compile(r"[a-z]+")
_SENTENCE_END = {".", "!", "?", "…"}
_OPENERS = {'"', "'", "“", "‘", "(", "[", "«"}


# ---------------------------------------------------------------------------------------------- tokens


@dataclass
class Tokens:
    """A text as tokens; `ws[i]` is the whitespace after token i, `lead` the text's leading whitespace."""

    lead: str = ""
    toks: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # "word" | "num" | "other"
    ws: list[str] = field(default_factory=list)

    def words(self) -> list[int]:
        return [i for i, k in enumerate(self.kinds) if k == "word"]

    def copy(self) -> Tokens:
        return Tokens(self.lead, list(self.toks), list(self.kinds), list(self.ws))


def tokenize(text: str) -> Tokens:
    """Cut a text into tokens (see the module doc); lossless: `detokenize(tokenize(t)) == t`."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    t = Tokens()
    pos = 0
    for m in TOKEN_RE.finditer(text):
        gap = text[pos:m.start()]
        if t.toks:
            t.ws[-1] = gap
        else:
            t.lead = gap
        t.toks.append(m.group())
        t.kinds.append(m.lastgroup)
        t.ws.append("")
        pos = m.end()
    if t.toks:
        t.ws[-1] = text[pos:]
    else:
        t.lead = text
    return t


def detokenize(t: Tokens) -> str:
    return t.lead + "".join(tok + ws for tok, ws in zip(t.toks, t.ws))


def words(text: str) -> list[str]:
    """The word tokens of a text, lower-cased (what TF-IDF counts)."""
    t = tokenize(text)
    return [t.toks[i].lower() for i in t.words()]


def _sentence_initial(t: Tokens, i: int) -> bool:
    j = i - 1
    while j >= 0 and t.toks[j] in _OPENERS:
        j -= 1
    return j < 0 or t.toks[j] in _SENTENCE_END


def _eligible(t: Tokens, i: int) -> bool:
    """A word whose synonyms may replace it or be inserted (see the module doc)."""
    w = t.toks[i]
    if t.kinds[i] != "word" or len(w) < 2 or not w.isalpha() or w.lower() in STOPWORDS:
        return False
    return w.islower() or (w[0].isupper() and w[1:].islower() and _sentence_initial(t, i))


def _match_case(src: str, new: str) -> str:
    if len(src) > 1 and src.isupper():
        return new.upper()
    if src[:1].isupper():
        return new[:1].upper() + new[1:]
    return new


# -------------------------------------------------------------------------------------------- synonyms


class Synonyms:
    """Sorted single-word WordNet synonyms of a word (see the module doc), cached per word."""

    def __init__(self, wn=None):
        if wn is None:
            from augdag.text.assets import wordnet

            wn = wordnet()
        self.wn = wn
        self._cache: dict[str, list[str]] = {}
        # NLTK's reader shares one open file per part of speech (seek, then readline): lookups from
        # several threads (Prefect's thread runner) must not interleave.
        self._lock = threading.Lock()

    def __call__(self, word: str) -> list[str]:
        word = word.lower()
        hit = self._cache.get(word)
        if hit is None:
            with self._lock:
                bases = {word}
                for pos in ("n", "v", "a", "r"):
                    bases.update(self.wn._morphy(word, pos))
                names = {lemma.name() for s in self.wn.synsets(word) for lemma in s.lemmas()}
            hit = sorted(n for n in names if len(n) > 1 and _LEMMA.fullmatch(n) and n not in bases)
            self._cache[word] = hit
        return hit


_DEFAULT_SYNONYMS: Synonyms | None = None


_DEFAULT_LOCK = threading.Lock()


def default_synonyms() -> Synonyms:
    """Synonyms from the prepared WordNet (augdag.text.assets.wordnet), built once per process."""
    global _DEFAULT_SYNONYMS
    with _DEFAULT_LOCK:
        if _DEFAULT_SYNONYMS is None:
            _DEFAULT_SYNONYMS = Synonyms()
        return _DEFAULT_SYNONYMS


# ----------------------------------------------------------------------------------------------- tfidf

TFIDF_FORMAT = "augdag-tfidf-1"


@dataclass(frozen=True)
class TfidfModel:
    """Document frequencies of lower-cased word tokens over the fitted texts (see the module doc)."""

    n_docs: int
    df: dict[str, int]

    @classmethod
    def fit(cls, texts: Iterable[str]) -> TfidfModel:
        df: dict[str, int] = {}
        n = 0
        for text in texts:
            n += 1
            for w in set(words(text)):
                df[w] = df.get(w, 0) + 1
        if n == 0:
            raise ValueError("TfidfModel.fit needs at least one text")
        return cls(n, dict(sorted(df.items())))

    def idf(self, word: str) -> float:
        return math.log((1 + self.n_docs) / (1 + self.df.get(word.lower(), 0))) + 1.0

    def weights(self, text: str | Tokens) -> dict[str, float]:
        """Each word of the text (lower-cased) -> its l2-normalised tf-idf weight in that text."""
        ws = words(text) if isinstance(text, str) else [text.toks[i].lower() for i in text.words()]
        tf: dict[str, int] = {}
        for w in ws:
            tf[w] = tf.get(w, 0) + 1
        raw = {w: c * self.idf(w) for w, c in sorted(tf.items())}
        norm = math.sqrt(math.fsum(v * v for v in raw.values()))
        return {w: v / norm for w, v in raw.items()} if norm > 0 else {}

    def to_dict(self) -> dict[str, Any]:
        return {"format": TFIDF_FORMAT, "n_docs": self.n_docs, "df": dict(sorted(self.df.items())),
                "idf": "ln((1 + n_docs) / (1 + df)) + 1; weight = tf * idf, l2-normalised per text"}

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): the same model gives the same bytes."""
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n"

    @classmethod
    def from_dict(cls, data: Any, source: str = "tfidf model") -> TfidfModel:
        if not isinstance(data, dict) or data.get("format") != TFIDF_FORMAT:
            raise ValueError(f"{source}: not an augdag TF-IDF table (expected \"format\": \"{TFIDF_FORMAT}\")")
        n, df = data.get("n_docs"), data.get("df")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"{source}: n_docs must be an integer >= 1, got {n!r}")
        if not isinstance(df, dict):
            raise ValueError(f"{source}: df must be a mapping word -> document count")
        for w, c in df.items():
            if not isinstance(c, int) or isinstance(c, bool) or not 1 <= c <= n:
                raise ValueError(f"{source}: df[{w!r}] = {c!r}; must be an integer in [1, n_docs={n}]")
        return cls(n, dict(sorted(df.items())))

    @classmethod
    def from_json(cls, text: str, source: str = "tfidf model") -> TfidfModel:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{source}: not JSON: {err}") from None
        return cls.from_dict(data, source)


# ------------------------------------------------------------------------------------------------- ops


def _count(alpha: float, n_words: int) -> int:
    return max(1, math.floor(alpha * n_words + 0.5))


def _need(edit: Any, keys: tuple[str, ...], op: str) -> None:
    if not isinstance(edit, dict):
        raise ValueError(f"{op}: an edit must be a mapping, got {edit!r}")
    missing = [k for k in keys if k not in edit]
    if missing:
        raise ValueError(f"{op}: edit {edit!r} lacks {', '.join(missing)} (needs {', '.join(keys)})")


def _index(t: Tokens, i: Any, op: str, key: str, hi: int | None = None) -> int:
    hi = len(t.toks) - 1 if hi is None else hi
    if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i <= hi:
        raise ValueError(f"{op}: {key} {i!r} is out of range (the text has {len(t.toks)} tokens at that point)")
    return i


def _expect(t: Tokens, i: int, want: Any, op: str, key: str, fold: bool = False) -> None:
    got = t.toks[i]
    if t.kinds[i] != "word" or (got.lower() != str(want).lower() if fold else got != want):
        raise ValueError(f"{op}: the record's {key} at token {i} is {want!r} but the text has {got!r} there; "
                         "the record does not belong to this text")


class _Replace:
    """Synonym replacement of n candidate words; tfidf_replace restricts candidates to low-weight words."""

    keys = ("index", "old", "new")

    def _candidates(self, cfg, t, syn, tfidf):
        return [i for i in range(len(t.toks)) if _eligible(t, i) and syn(t.toks[i])]

    def make_params(self, cfg, g, t, syn, tfidf):
        cand = self._candidates(cfg, t, syn, tfidf)
        n = _count(cfg.alpha, len(t.words()))
        chosen = sorted(cand[k] for k in g.permutation(len(cand))[:n])
        edits = []
        for i in chosen:
            options = syn(t.toks[i])
            edits.append({"index": i, "old": t.toks[i],
                          "new": _match_case(t.toks[i], options[int(g.integers(len(options)))])})
        return {"edits": edits}

    def apply(self, t, p, op):
        for e in p["edits"]:
            _need(e, self.keys, op)
            i = _index(t, e["index"], op, "index")
            _expect(t, i, e["old"], op, "old")
            new = e["new"]
            if (not isinstance(new, str) or not new or TOKEN_RE.fullmatch(new) is None
                    or tokenize(new).kinds != ["word"]):
                raise ValueError(f"{op}: new word {new!r} at token {i} must be a single word")
            t.toks[i] = new

    def changes(self, p, op):
        return [(op, e["old"], e["new"]) for e in p["edits"]]


class Synonym(_Replace):
    pass


class TfidfReplace(_Replace):
    def make_params(self, cfg, g, t, syn, tfidf):
        if tfidf is None:
            raise ValueError("tfidf_replace needs a fitted TfidfModel: make_params(..., tfidf=TfidfModel.fit(texts))")
        weights = tfidf.weights(t)
        cand = [i for i in range(len(t.toks))
                if _eligible(t, i) and weights[t.toks[i].lower()] < cfg.threshold and syn(t.toks[i])]
        n = _count(cfg.alpha, len(t.words()))
        chosen = sorted(cand[k] for k in g.permutation(len(cand))[:n])
        edits = []
        for i in chosen:
            options = syn(t.toks[i])
            edits.append({"index": i, "old": t.toks[i],
                          "new": _match_case(t.toks[i], options[int(g.integers(len(options)))]),
                          "weight": weights[t.toks[i].lower()]})
        return {"threshold": cfg.threshold, "edits": edits}


def _insert(t: Tokens, k: int, word: str) -> None:
    """Insert a word before token k (k == len: at the end), spaced as the module doc says."""
    if k < len(t.toks) and t.kinds[k] == "word":
        new_ws = " "
    else:  # after the last word: before trailing punctuation, or at the very end
        new_ws = t.ws[k - 1]
        t.ws[k - 1] = " "
    t.toks.insert(k, word)
    t.kinds.insert(k, "word")
    t.ws.insert(k, new_ws)


def _insert_positions(t: Tokens) -> list[int]:
    w = t.words()
    return w[1:] + [w[-1] + 1] if w else []


class Insert:
    keys = ("index", "word", "source_index", "source")

    def make_params(self, cfg, g, t, syn, tfidf):
        t = t.copy()
        edits = []
        for _ in range(_count(cfg.alpha, len(t.words()))):
            cand = [i for i in range(len(t.toks)) if _eligible(t, i) and syn(t.toks[i])]
            if not cand:
                break
            src = cand[int(g.integers(len(cand)))]
            options = syn(t.toks[src])
            word = options[int(g.integers(len(options)))]
            positions = _insert_positions(t)
            k = positions[int(g.integers(len(positions)))]
            edits.append({"index": k, "word": word, "source_index": src, "source": t.toks[src]})
            _insert(t, k, word)
        return {"edits": edits}

    def apply(self, t, p, op):
        for e in p["edits"]:
            _need(e, self.keys, op)
            src = _index(t, e["source_index"], op, "source_index")
            _expect(t, src, e["source"], op, "source")
            k = _index(t, e["index"], op, "index", hi=len(t.toks))
            if k not in _insert_positions(t):
                raise ValueError(f"{op}: index {k} is not an insertion point (before a word other than the first, "
                                 "or right after the last word)")
            word = e["word"]
            if not isinstance(word, str) or tokenize(word).kinds != ["word"] or tokenize(word).toks != [word]:
                raise ValueError(f"{op}: inserted word {word!r} must be a single word")
            _insert(t, k, word)

    def changes(self, p, op):
        return [(op, "", e["word"]) for e in p["edits"]]


class Swap:
    keys = ("i", "j", "a", "b")

    def make_params(self, cfg, g, t, syn, tfidf):
        w = t.words()
        toks = list(t.toks)
        edits = []
        if len(w) >= 2:
            for _ in range(_count(cfg.alpha, len(w))):
                a, b = sorted(int(x) for x in g.choice(len(w), size=2, replace=False))
                i, j = w[a], w[b]
                edits.append({"i": i, "j": j, "a": toks[i], "b": toks[j]})
                toks[i], toks[j] = toks[j], toks[i]
        return {"edits": edits}

    def apply(self, t, p, op):
        for e in p["edits"]:
            _need(e, self.keys, op)
            i, j = _index(t, e["i"], op, "i"), _index(t, e["j"], op, "j")
            if i == j:
                raise ValueError(f"{op}: i and j are both {i}")
            _expect(t, i, e["a"], op, "a")
            _expect(t, j, e["b"], op, "b")
            t.toks[i], t.toks[j] = t.toks[j], t.toks[i]

    def changes(self, p, op):
        return [(op, e["a"], e["b"]) for e in p["edits"]]


def _delete(t: Tokens, i: int) -> None:
    before = t.ws[i - 1] if i > 0 else t.lead
    after = t.ws[i]
    joined = "" if not before or not after else (after if len(after) > len(before) else before)
    if i > 0:
        t.ws[i - 1] = joined
    else:
        t.lead = joined
    del t.toks[i], t.kinds[i], t.ws[i]


class Delete:
    keys = ("index", "old")

    def make_params(self, cfg, g, t, syn, tfidf):
        w = t.words()
        if len(w) <= 1:
            return {"edits": []}
        draws = g.random(len(w))
        gone = [i for i, r in zip(w, draws) if r < cfg.rate]
        if len(gone) == len(w):
            gone.remove(w[int(g.integers(len(w)))])
        return {"edits": [{"index": i, "old": t.toks[i]} for i in gone]}

    def apply(self, t, p, op):
        idx = []
        for e in p["edits"]:
            _need(e, self.keys, op)
            i = _index(t, e["index"], op, "index")
            _expect(t, i, e["old"], op, "old")
            idx.append(i)
        if len(set(idx)) != len(idx):
            raise ValueError(f"{op}: token indices {idx} repeat")
        if idx and len(idx) >= len(t.words()):
            raise ValueError(f"{op}: the record deletes every word of the text")
        for i in sorted(idx, reverse=True):
            _delete(t, i)

    def changes(self, p, op):
        return [(op, e["old"], "") for e in p["edits"]]


class Entity(_Replace):
    """A linked mention replaced by a related entity (augdag/text/kg.py): a hypernym or a sibling."""

    def make_params(self, cfg, g, t, syn, tfidf, linker=None):
        if linker is None:
            raise ValueError("entity needs a knowledge-graph linker: make_params(..., linker=kg.Linker())")
        links = linker.link(detokenize(t))
        n = _count(cfg.alpha, len(t.words()))
        edits = []
        for k in g.permutation(len(links)):
            if len(edits) == n:
                break
            link = links[int(k)]
            old = t.toks[link.index]
            options = {r: linker.related(link.synset, r, cfg.nearest) for r in cfg.relations}
            usable = [r for r in cfg.relations if options[r]]
            if not usable:
                continue
            relation = usable[int(g.integers(len(usable)))]
            word, target = options[relation][int(g.integers(len(options[relation])))]
            # a common noun is lower-case mid-sentence whatever the mention's case ("by Spielberg" -> "by filmmaker",
            # "the train ID" -> "the train badge"), capitalised at a sentence's start; a name keeps its own case
            new = word[:1].upper() + word[1:] if word.islower() and _sentence_initial(t, link.index) else word
            edits.append({"index": link.index, "old": old, "new": new, "synset": link.synset,
                          "similarity": link.similarity, "relation": relation, "target": target})
        edits.sort(key=lambda e: e["index"])
        return {"edits": edits}

    def changes(self, p, op):
        return [(op, e["old"], e["new"]) for e in p["edits"]]


OPS = {
    "entity": Entity(),
    "synonym": Synonym(),
    "tfidf_replace": TfidfReplace(),
    "insert": Insert(),
    "swap": Swap(),
    "delete": Delete(),
}
# OPS and augdag.text.params.TextOpsParams list the same ops in the same order (tests/test_text_ops.py checks
# it; not asserted here, so that importing the ops does not import torch through augdag.params).


def make_params(cfg, text: str, sample_seed: int, tfidf: TfidfModel | None = None, *,
                synonyms: Synonyms | None = None, linker=None) -> list[dict]:
    """The ops applied to one text, in order, each with its exact edits (a JSON-able list).

    cfg: a `TextOpsParams`. Each op decides (probability `p`) and draws from its own generator
    `rng(sample_seed, "text-op", op)`. tfidf: needed when tfidf_replace can apply. synonyms: a `Synonyms`
    (default: the prepared WordNet). linker: an `augdag.text.kg.Linker`, needed when entity can apply."""
    t = tokenize(text)
    syn = None
    applied = []
    for name, op in OPS.items():
        c = getattr(cfg, name)
        g = make_rng(sample_seed, "text-op", name)
        if c.p > 0 and g.random() < c.p:
            if syn is None:
                syn = synonyms if synonyms is not None else default_synonyms()
            extra = {"linker": linker} if name == "entity" else {}
            record = {"op": name, **op.make_params(c, g, t, syn, tfidf, **extra)}
            op.apply(t, record, name)  # the next op sees this op's output
            applied.append(record)
    return applied


def _ops(record: Any) -> list[dict]:
    if not isinstance(record, list):
        raise ValueError(f"a text op record must be a list of op entries, got {type(record).__name__}")
    for p in record:
        if not isinstance(p, dict) or "op" not in p:
            raise ValueError(f"each op entry must be a mapping with an 'op' key, got {p!r}")
        if p["op"] not in OPS:
            raise ValueError(f"unknown text op {p['op']!r}; known ops: {', '.join(OPS)}")
        if not isinstance(p.get("edits"), list):
            raise ValueError(f"{p['op']}: the entry needs an 'edits' list, got {p.get('edits')!r}")
    return record


def apply(text: str, record: list[dict]) -> str:
    """Replay a record on its source text; pure and deterministic (no WordNet, no randomness)."""
    t = tokenize(text)
    for p in _ops(record):
        OPS[p["op"]].apply(t, p, p["op"])
    return detokenize(t)


def changes(source: str, record: list[dict]) -> list[tuple[str, str, str]]:
    """(op, old, new) per edit, for the report: a replaced word (old -> new), an inserted word ("", new),
    a swapped pair (a, b), a deleted word (old, ""). The record is replayed on `source` first, so a record
    that does not belong to the text raises ValueError."""
    apply(source, record)
    return [c for p in record for c in OPS[p["op"]].changes(p, p["op"])]
