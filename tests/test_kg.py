"""Knowledge-graph enrichment for text (issue 32): linking on WordNet by embedding similarity, related entities,
the entity rewrite op, and the classifier's enriched embedding. Real WordNet 3.0 and the real MiniLM encoder."""

import json

import numpy as np
import pytest
import torch

from augdag.text import assets, classifier, kg, ops
from augdag.text.params import TextOpsParams
from helpers import torch_threads

fixed_threads = torch_threads(1)

ONLY_ENTITY = TextOpsParams.model_validate({n: {"p": 1.0 if n == "entity" else 0.0} for n in ops.OPS})
SETTINGS = {"weight": 0.3, "max_senses": 8, "min_similarity": 0.2, "max_entities": 8, "encoder_path": None}


@pytest.fixture(scope="module")
def linker():
    assets.prepare_wordnet()
    return kg.Linker(min_similarity=0.2)


def mentions(linker, text):
    t = ops.tokenize(text)
    return [t.toks[i] for i in linker.mention_indices(t)]


def test_mentions_are_nouns_and_names(linker):
    got = mentions(linker, "The plot is thin, but the music makes a good film about Spielberg and the sea.")
    assert {"plot", "music", "film", "Spielberg", "sea"} <= set(got)
    assert not {"The", "is", "thin", "but", "makes", "good", "a", "about", "and"} & set(got)


def test_linking_follows_the_context(linker):
    river = linker.link("We sat on the bank of the river and watched the fish.")
    money = linker.link("The bank approved the loan and raised its interest rate.")
    by_word = {k.mention: k.synset for k in river} | {"money " + k.mention: k.synset for k in money}
    assert by_word["bank"] == "bank.n.01"  # sloping land beside water
    assert by_word["money bank"] == "depository_financial_institution.n.01"
    for text, links in (("river", river), ("money", money)):
        t = ops.tokenize("We sat on the bank of the river and watched the fish." if text == "river"
                         else "The bank approved the loan and raised its interest rate.")
        for k in links:
            assert t.toks[k.index] == k.mention and k.similarity >= 0.2
            assert k.synset in {s.name() for s in linker.senses(k.mention)}
        assert [k.index for k in links] == sorted(k.index for k in links)


def test_link_limits_and_threshold(linker):
    text = "The bank approved the loan and raised its interest rate for the company in the city."
    full = linker.link(text)
    assert len(full) >= 3
    few = kg.Linker(linker.wn, linker._embed, min_similarity=0.2, max_entities=2).link(text)
    best = sorted(full, key=lambda k: -k.similarity)[:2]
    assert sorted(few, key=lambda k: k.index) == sorted(best, key=lambda k: k.index)
    assert kg.Linker(linker.wn, linker._embed, min_similarity=0.99).link(text) == []
    assert np.array_equal(kg.Linker(linker.wn, linker._embed, min_similarity=0.99).entity_sum(text),
                          np.zeros(384, np.float32))
    with pytest.raises(ValueError, match="max_entities"):
        kg.Linker(linker.wn, linker._embed, max_entities=0)


def test_entity_sum_is_the_sum_of_the_linked_glosses(linker):
    text = "The comedy made the whole audience laugh."
    links = linker.link(text)
    assert links
    want = np.sum([linker.vectors([kg.gloss(linker.wn.synset(k.synset))])[0] for k in links], axis=0)
    assert np.allclose(linker.entity_sum(text), want, atol=1e-6)
    fresh = kg.Linker(linker.wn, min_similarity=0.2)  # caches play no part in the result
    assert np.array_equal(fresh.entity_sum(text), linker.entity_sum(text))


def test_related_entities(linker):
    assert ("drama", "drama.n.03") in linker.related("comedy.n.01", "hypernym")
    assert ("tragedy", "tragedy.n.02") in linker.related("comedy.n.01", "sibling")
    names = linker.related("spielberg.n.01", "sibling")
    assert ("Coppola", "coppola.n.01") in names and all(w[0].isupper() for w, _ in names)
    assert linker.related("spielberg.n.01", "hypernym") == [("filmmaker", "film_maker.n.01")]
    near = linker.related("spielberg.n.01", "sibling", nearest=3)
    assert len({s for _, s in near}) == 3 and set(near) <= set(names)
    with pytest.raises(ValueError, match="relation must be one of"):
        linker.related("comedy.n.01", "cousin")


def test_entity_op_records_replay_and_redraw(linker):
    texts = ["The comedy made the whole audience laugh.", "A gripping film about a soldier, directed by Spielberg.",
             "The bank approved the loan and raised its interest rate."]
    changed = 0
    for k, text in enumerate(texts):
        rec = ops.make_params(ONLY_ENTITY, text, 100 + k, linker=linker)
        assert [p["op"] for p in rec] == ["entity"]
        stored = json.loads(json.dumps(rec))
        out = ops.apply(text, stored)
        assert ops.make_params(ONLY_ENTITY, text, 100 + k, linker=linker) == rec
        links = {k.index: k for k in linker.link(text)}
        for e in rec[0]["edits"]:
            assert e["synset"] == links[e["index"]].synset and e["old"] == links[e["index"]].mention
            assert (e["new"].lower(), e["target"]) in {(w.lower(), s) for w, s in
                                                      linker.related(e["synset"], e["relation"], 8)}
        changed += out != text
        assert ops.changes(text, stored) == [("entity", e["old"], e["new"]) for e in rec[0]["edits"]]
    assert changed == len(texts)
    bad = json.loads(json.dumps(ops.make_params(ONLY_ENTITY, texts[0], 100, linker=linker)))
    bad[0]["edits"][0]["old"] = "tragedy"
    with pytest.raises(ValueError, match="does not belong to this text"):
        ops.apply(texts[0], bad)
    with pytest.raises(ValueError, match="needs a knowledge-graph linker"):
        ops.make_params(ONLY_ENTITY, texts[0], 0)


def test_a_common_noun_replacement_takes_the_sentences_case_not_the_mentions(linker):
    text = "Comedy is fine. We liked the HOTEL, the FILM and the comedy."
    seen = []
    for seed in range(12):
        rec = ops.make_params(TextOpsParams.model_validate({n: {"p": 1.0 if n == "entity" else 0.0,
                                                                **({"alpha": 1.0} if n == "entity" else {})}
                                                            for n in ops.OPS}), text, seed, linker=linker)
        for e in rec[0]["edits"] if rec else []:
            synset_is_name = linker.wn.synset(e["target"]).lemma_names()[0][:1].isupper()
            if e["index"] == 0:  # sentence-initial: capitalised
                assert e["new"][:1].isupper()
            elif not synset_is_name:
                assert e["new"].islower(), e
            seen.append(e["old"])
    assert {"HOTEL", "FILM", "comedy", "Comedy"} <= set(seen)


def test_entity_op_off_leaves_the_other_ops_as_they_were(linker):
    eda = TextOpsParams()
    both = TextOpsParams.model_validate({**eda.model_dump(), "entity": {"p": 1.0}})
    text = "The comedy made the whole audience laugh, and the plot is thin."
    plain = ops.make_params(eda, text, 7)
    with_entity = ops.make_params(both, text, 7, linker=linker)
    assert with_entity[0]["op"] == "entity" and "entity" not in [p["op"] for p in plain]
    # every op draws from its own generator: the EDA ops pick the same kind of edits on the rewritten text
    assert [p["op"] for p in with_entity[1:]] == [p["op"] for p in plain]


def test_enrich_formula():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(3, 8, generator=g) * 5
    s = torch.randn(3, 8, generator=g)
    s[1] = 0
    out = kg.enrich(e, s, 0.3)
    unit = e / e.norm(dim=1, keepdim=True)
    want = e.norm(dim=1, keepdim=True) * torch.nn.functional.normalize(unit + 0.3 * s, dim=1)
    assert torch.allclose(out[[0, 2]], want[[0, 2]], atol=1e-6)
    assert torch.equal(out[1], e[1])  # no link: unchanged
    assert torch.allclose(out.norm(dim=1), e.norm(dim=1), atol=1e-5)
    assert kg.enrich(e, s, 0.0) is e
    assert not torch.allclose(out[0], e[0])


@pytest.fixture(scope="module")
def small_set():
    texts = ["A gripping film about a soldier in Paris.", "The comedy is dull and the plot is a mess.",
             "Spielberg makes a fine movie with a great cast.", "The horror genre has rarely been this boring.",
             "It was a good day to make a film."]
    return texts, np.array([1, 0, 1, 0, 1])


def test_classifier_sees_the_enriched_embedding_and_saves_it(linker, small_set, tmp_path):
    texts, labels = small_set
    cfg = classifier.FinetuneConfig(steps=2, batch_size=4)
    res = classifier.fine_tune(texts, labels, ["rotten", "fresh"], config=cfg, kg=SETTINGS)
    base = classifier.fine_tune(texts, labels, ["rotten", "fresh"], config=cfg)
    zero = classifier.fine_tune(texts, labels, ["rotten", "fresh"], config=cfg, kg={**SETTINGS, "weight": 0.0})
    m = res.model
    assert m.kg == SETTINGS and zero.model.kg is None
    assert np.array_equal(zero.model.predict_proba(texts), base.model.predict_proba(texts))
    raw = classifier.encoder.pooled_unpadded(m.encoder, m.tokenizer, texts, 8, m.max_length)
    sums = torch.from_numpy(np.stack([m._linker.entity_sum(t) for t in texts]))
    assert torch.equal(m.pooled_unpadded(texts), kg.enrich(raw, sums, 0.3))
    probs = m.predict_proba(texts)
    assert not np.allclose(probs, base.model.predict_proba(texts))
    m.save(tmp_path / "model")
    loaded = classifier.TextClassifier.load(tmp_path / "model")
    assert loaded.kg == SETTINGS and np.array_equal(loaded.predict_proba(texts), probs)
    cfg_file = tmp_path / "model" / classifier.CONFIG_FILE
    data = json.loads(cfg_file.read_text())
    data["kg"] = {"weight": 0.3}
    cfg_file.write_text(json.dumps(data))
    with pytest.raises(Exception, match="knowledge-graph settings must have the keys"):
        classifier.TextClassifier.load(tmp_path / "model")
