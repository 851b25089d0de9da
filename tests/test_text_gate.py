"""augdag.text.gate: text quality scores on hand-made cases, the reference classifier, and the text gate
(augdag.checks.TEXT_BRANCH: expectations/text_branch.json run by the real Great Expectations, and the
vectorised row checks)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from augdag import checks, scoring
from augdag.errors import ExpectationFailed
from augdag.text import encoder
from augdag.text import gate as tg

SRC = "The movie was wonderful and deeply moving."


@pytest.fixture(scope="module")
def reference():
    """A reference probe on 20 fresh + 20 rotten Rotten Tomatoes snippets (the first in file order)."""
    from augdag.text.assets import rotten_tomatoes_path

    torch.set_num_threads(1)
    d = pd.read_csv(rotten_tomatoes_path())
    d = d.dropna(subset=["text"]).drop_duplicates("text")
    texts, labels = [], []
    for label, name in enumerate(["fresh", "rotten"]):
        part = d.text[d.category == name].head(20).tolist()
        texts += part
        labels += [label] * len(part)
    return tg.TextReference(texts, labels, 2), texts, np.array(labels)


def test_duplicate_and_length_ratio_on_hand_made_cases():
    sources = [SRC, SRC, "A dull film.", None, ""]
    variants = ["  the movie  was WONDERFUL and deeply moving.\n", "The movie was wonderful and moving.",
                "A dull, dull, dull film.", "Anything at all.", "Not empty."]
    assert tg.is_duplicate(sources, variants) == [True, False, False, None, False]
    ratio = tg.length_ratio(sources, variants)
    np.testing.assert_allclose(ratio[:3], [1.0, 6 / 7, 5 / 3])
    assert math.isnan(ratio[3]) and math.isnan(ratio[4])
    with pytest.raises(ValueError, match="same length"):
        tg.length_ratio([SRC], [])


def test_semantic_similarity_orders_and_handles_missing_sources():
    sources = [SRC, SRC, SRC, None]
    variants = ["the movie was WONDERFUL and deeply moving.", "The film was great and very touching.",
                "Stock prices fell sharply on Tuesday morning.", "Whatever."]
    sim = tg.semantic_similarity(sources, variants)
    assert sim[0] == pytest.approx(1.0, abs=1e-6)  # the uncased tokenizer sees the same tokens
    assert 0.6 < sim[1] < 0.99 and sim[2] < 0.2 and sim[1] > sim[2] + 0.4
    assert math.isnan(sim[3])
    # a row's score does not depend on the other rows
    assert tg.semantic_similarity(sources[1:2], variants[1:2]).tobytes() == sim[1:2].tobytes()
    e = encoder.embed([SRC, variants[1]])
    assert sim[1] == pytest.approx(float(e[0] @ e[1]), abs=1e-6)


def test_reference_label_prob_hard_and_soft(reference):
    ref, texts, labels = reference
    p = ref.proba(texts)
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert (p.argmax(1) == labels).mean() > 0.9  # fits its own train texts
    again = tg.TextReference(texts, labels, 2)
    assert again.proba(texts).tobytes() == p.tobytes()  # deterministic fit

    variants = [texts[0], texts[25], texts[3]]
    sources = [texts[0], texts[25], texts[3]]
    scores = tg.text_scores(sources, variants, [0, 1, [0.3, 0.7]], reference=ref)
    pv = ref.proba(variants)
    np.testing.assert_allclose(scores["label_prob"], [pv[0, 0], pv[1, 1], 0.3 * pv[2, 0] + 0.7 * pv[2, 1]])
    assert scores["is_duplicate"] == [True, True, True]
    np.testing.assert_allclose(scores["length_ratio"], 1.0)
    assert np.isnan(tg.text_scores(sources, variants)["label_prob"]).all()  # no reference: no score
    with pytest.raises(ValueError, match=r"targets\[0\] = 2: expected a class index 0..1"):
        tg.text_scores(sources, variants, [2, 0, 1], reference=ref)
    with pytest.raises(ValueError, match="labels must be class indices"):
        tg.TextReference(texts[:2], [0, 5], 2)


def test_mix_scores(reference):
    ref, texts, _ = reference
    a, b = [texts[0], texts[1]], [texts[30], texts[31]]
    s = tg.mix_scores(a, b, [1.0, 0.5], [[1.0, 0.0], [0.5, 0.5]], reference=ref)
    assert s["semantic_similarity"][0] == pytest.approx(1.0, abs=1e-9)  # lam = 1: the mix is text_a
    assert s["semantic_similarity"][1] < 0.95
    assert s["label_prob"][0] == pytest.approx(ref.proba([texts[0]])[0, 0], abs=1e-9)
    assert s["is_duplicate"] == [None, None] and np.isnan(s["length_ratio"]).all()
    with pytest.raises(ValueError, match=r"lam must lie in \[0, 1\]"):
        tg.mix_scores(a, b, [1.5, 0.5])


def test_outlier_z_is_the_window_filter():
    scores = np.r_[np.linspace(0.80, 0.90, 12), 0.2, 0.85]
    z = tg.outlier_z(scores, window_size=20)
    np.testing.assert_array_equal(z, scoring.window_z(scores, 20))
    assert np.isnan(z[:10]).all() and z[12] < -2.0 and abs(z[13]) < 2.0


def _frame() -> pd.DataFrame:
    base = {"split": "train", "branch": "synonym", "label": 0, "soft_label": None, "parent_ids": ["raw-00000"],
            "english_share": 0.9, "semantic_similarity": 0.9, "label_prob": 0.8, "length_ratio": 1.0,
            "is_duplicate": False, "outlier_z": 0.1, "soft_label_sum": 1.0, "parents_in_raw": True,
            "text": "A fine and moving film."}
    changes = {
        "good": {},
        "blank": {"text": "   "},
        "long": {"text": "x" * 300},
        "dup": {"is_duplicate": True},
        "far": {"semantic_similarity": 0.3},
        "offlabel": {"label_prob": 0.02},
        "foreign": {"english_share": 0.1},
        "spike": {"outlier_z": -5.0},
        "mix": {"branch": "mix", "text": None, "is_duplicate": None, "length_ratio": float("nan"),
                "soft_label": [0.5, 0.5], "parent_ids": ["raw-00000", "raw-00001"]},
    }
    rows = [{**base, **c, "sample_id": name} for name, c in changes.items()]
    return pd.DataFrame(rows)


PARAMS = tg.suite_parameters([0, 1], text_length=(1, 200), english_share_min=0.5, similarity_min=0.7,
                             label_prob_min=0.1, sigma=2.0)


def test_gate_filters_each_bad_row_for_its_reason(tmp_path):
    out = tmp_path / "synonym.json"
    result = checks.gate_frame(_frame(), checks.TEXT_BRANCH, PARAMS, results_path=out)
    assert result.kept.sample_id.tolist() == ["good", "mix"]
    reasons = dict(zip(result.rejected.sample_id, result.rejected.gate_reason))
    assert reasons == {"blank": "text_nonempty", "long": "text_length", "dup": "duplicate",
                       "far": "semantic_similarity", "offlabel": "label_consistency", "foreign": "english",
                       "spike": "outlier"}
    assert result.report.suite == "text_branch" and result.report.success  # GE validated the suite
    assert json.loads(out.read_text())["suite_name"] == "text_branch"
    both = _frame()
    both.loc[2, "english_share"] = 0.1  # "long" fails two checks: both named, in gate order
    rejected = checks.gate_frame(both, checks.TEXT_BRANCH, PARAMS).rejected
    assert dict(zip(rejected.sample_id, rejected.gate_reason))["long"] == "text_length; english"


def test_gate_modes_null_thresholds_and_range_failures():
    warned = checks.gate_frame(_frame(), checks.TEXT_BRANCH, PARAMS, modes={"duplicate": "warn", "text_length": "off"})
    assert {"dup", "long"} <= set(warned.kept.sample_id)
    assert [w.check for w in warned.warnings] == ["duplicate"] and warned.warnings[0].sample_ids == ["dup"]
    off = tg.suite_parameters([0, 1], text_length=(1, 200), english_share_min=None, similarity_min=None,
                              label_prob_min=0.1, sigma=None)
    kept = checks.gate_frame(_frame(), checks.TEXT_BRANCH, off)
    assert {"far", "foreign", "spike"} <= set(kept.kept.sample_id)  # their checks are off
    assert {kept.checks[c]["mode"] for c in ("english", "semantic_similarity", "outlier")} == {"off"}
    bad = _frame()
    bad.loc[0, "semantic_similarity"] = 1.5
    with pytest.raises(ExpectationFailed, match="semantic_similarity_range"):
        checks.gate_frame(bad, checks.TEXT_BRANCH, PARAMS)
    names = set(checks.TEXT_BRANCH.check_names())
    assert {"label_consistency", "outlier", "duplicate", "english", "text_length"} <= names
    with pytest.raises(ValueError, match="text_length"):
        tg.suite_parameters([0, 1], text_length=(5, 2))
