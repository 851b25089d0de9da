"""Simulated dialogues (issue 32): the intent chain, its validation, the pools, the MultiWOZ intent set, and the
dialogue stage with its context-aware fine-tune and evaluation on held-out real turns (stages run directly)."""

import json

import numpy as np
import pytest
import yaml

from augdag.errors import DataError, ParamsError
from augdag.params import parse_params
from augdag.seeding import rng
from augdag.storage import read_manifest
from augdag.tasks import run_stage
from augdag.text import data, dialogue
from helpers import REPO, torch_threads

fixed_threads = torch_threads(1)

START = {"ask": 0.7, "greet": 0.3}
ROWS = {"greet": {"ask": 1.0}, "ask": {"ask": 0.3, "thank": 0.5, "end": 0.2}, "thank": {"end": 0.6, "ask": 0.4}}


def test_walks_follow_the_matrix():
    chain = dialogue.Chain(START, ROWS)
    dialogues = dialogue.simulate(chain, {k: 5 for k in ROWS}, 4000, 12, 0, "train", weighted=False)
    firsts = np.mean([d[0].intent == "ask" for d in dialogues])
    assert abs(firsts - 0.7) < 0.03
    moves: dict = {}
    for d in dialogues:
        assert 1 <= len(d) <= 12 and [t.turn for t in d] == list(range(len(d)))
        for a, b in zip(d, d[1:]):
            moves.setdefault(a.intent, []).append(b.intent)
            assert b.p == ROWS[a.intent][b.intent]
        assert d[0].p == START[d[0].intent]
    assert set(moves["greet"]) == {"ask"}
    share = np.mean([b == "thank" for b in moves["ask"]])  # among the moves that did not end
    assert abs(share - 0.5 / 0.8) < 0.03
    seen = chain.empirical(dialogues)
    assert abs(seen["ask"]["end"] - 0.2) < 0.03 and abs(seen["thank"]["ask"] - 0.4) < 0.03


def test_draws_do_not_depend_on_mapping_order_and_seed_matters():
    a = dialogue.simulate(dialogue.Chain(START, ROWS), {k: 7 for k in ROWS}, 50, 8, 3, "test", weighted=False)
    shuffled = {k: dict(reversed(list(v.items()))) for k, v in reversed(list(ROWS.items()))}
    b = dialogue.simulate(dialogue.Chain(dict(reversed(list(START.items()))), shuffled), {k: 7 for k in ROWS}, 50, 8,
                          3, "test", weighted=False)
    c = dialogue.simulate(dialogue.Chain(START, ROWS), {k: 7 for k in ROWS}, 50, 8, 4, "test", weighted=False)
    assert a == b and a != c


def test_pools_held_out_rows_are_used_once_before_again_and_weights_are_followed():
    chain = dialogue.Chain({"ask": 1.0}, {"ask": {"ask": 0.9, "end": 0.1}})
    dl = dialogue.simulate(chain, {"ask": 6}, 3, 10, 0, "test", weighted=False)
    rows = [t.row for d in dl for t in d]
    for start in range(0, len(rows) - 5, 6):  # each block of 6 consecutive turns is a permutation of the pool
        assert sorted(rows[start:start + 6]) == list(range(6))
    w = dialogue.simulate(chain, {"ask": [0.0, 3.0, 1.0]}, 300, 10, 0, "train", weighted=True)
    drawn = np.bincount([t.row for d in w for t in d], minlength=3)
    assert drawn[0] == 0 and abs(drawn[1] / drawn.sum() - 0.75) < 0.05
    with pytest.raises(ValueError, match=r"no utterances for intents \['ask'\]"):
        dialogue.simulate(chain, {"ask": 0}, 1, 3, 0, "test", weighted=False)


def test_compose_puts_the_turn_first_and_the_nearest_context_next():
    assert dialogue.compose("c", ["a", "b"], 0) == "c"
    assert dialogue.compose("c", ["a", "b"], 1) == "c [SEP] b"
    assert dialogue.compose("c", ["a", "b"], 5) == "c [SEP] b [SEP] a"
    assert dialogue.compose("a", [], 2) == "a"


@pytest.mark.parametrize("chain, message", [
    ({"start": {"ask": 1.0}, "transitions": {"ask": {"ask": 0.5, "end": 0.4}}}, "transitions.ask: probabilities "
                                                                                  "sum to 0.9, not 1"),
    ({"start": {"ask": 1.0}, "transitions": {"ask": {"thank": 1.0}}}, r"\['thank'\] have no row"),
    ({"start": {"end": 1.0}, "transitions": {"ask": {"end": 1.0}}}, r"start: \['end'\] have no row"),
    ({"start": {"ask": 1.0}, "transitions": {"ask": {"end": 1.2, "ask": -0.2}}}, "must be in \\[0, 1\\]"),
    ({"start": {}, "transitions": {}}, "needs text.dialogue.start and text.dialogue.transitions"),
])
def test_bad_chains_name_the_key(chain, message):
    with pytest.raises(ParamsError, match=message):
        parse_params({"modality": "text", "text": {"dialogue": {"enabled": True, **chain}}})


def test_intents_must_be_classes_when_the_classes_are_listed():
    with pytest.raises(ParamsError, match=r"intents \['ask'\] are not among text.ingest.classes"):
        parse_params({"modality": "text", "text": {"ingest": {"classes": ["a", "b"]}, "dialogue": {
            "enabled": True, "start": {"ask": 1.0}, "transitions": {"ask": {"end": 1.0}}}}})


def test_multiwoz_user_turns():
    f = data.multiwoz_user()
    assert len(f) > 15_000 and f.text.is_unique and data.class_names(f)[:2] == ["Attraction-Inform",
                                                                                 "Attraction-Request"]
    assert len(data.class_names(f)) == 17
    assert not f.text.str.contains(r"#[A-Z]+-").any()  # delexicalised slots name the act: left out
    assert not f.text.str.contains(r" [.,?!]|\bI 'm\b|  ").any()  # detokenised, single spaces
    sub = data.multiwoz_user(["general-bye", "Hotel-Request"])
    assert set(sub.label_name) == {"general-bye", "Hotel-Request"}
    with pytest.raises(DataError, match="unknown classes \\['Weather-Inform'\\]"):
        data.multiwoz_user(["Weather-Inform"])


# ----------------------------------------------------------------------------------------------- the stage

def small_params(**dialogue_over):
    cfg = yaml.safe_load((REPO / "configs" / "dialogue.yaml").read_text())
    cfg["text"]["ingest"].update(n_per_class=4, n_val_per_class=3, n_test_per_class=5)
    cfg["text"]["dialogue"].update(dialogues=12, eval_dialogues=6, **dialogue_over)
    cfg["text"]["finetune"] = {"steps": 2, "batch_size": 8, "eval_every": 2}
    cfg["strategy"]["traditional"]["multiplier"] = 2
    return parse_params(cfg)


STAGES = ("ingest", "strategy", "traditional", "mix", "generative", "quality", "merge", "dialogue")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("dialogue")
    p = small_params()
    for stage in STAGES:
        run_stage(stage, p, root)
    return p, root


def test_turns_hold_their_lineage(project):
    p, root = project
    m = read_manifest(root / "data" / "dialogue")
    merged = read_manifest(root / "data" / "merge")
    raw = read_manifest(root / "data" / "ingest")
    names = json.loads((root / "data" / "ingest" / "classes.json").read_text())["classes"]
    texts = {**dict(zip(merged.sample_id, merged.text)), **dict(zip(raw.sample_id, raw.text))}
    assert set(m.split) == {"train", "val", "test"} and set(m.branch) == {"dialogue"}
    split_of = dict(zip(raw.sample_id, raw.split))
    variants = 0
    for r in m.itertuples():
        op = json.loads(r.op_params)
        parent = r.parent_ids[0]
        assert r.text == texts[parent] and names[r.label] == op["intent"]
        assert op["intent"] in p.text.dialogue.transitions
        if r.split == "train":
            assert parent in set(merged.sample_id)
            variants += "~" in parent
        else:
            assert split_of[parent] == r.split  # held-out real turns only
        assert op["previous"] == [f"dlg-{op['dialogue']}-t{k}" for k in range(op["turn"])]
        if op["turn"] == 0:
            assert op["p"] == p.text.dialogue.start[op["intent"]]
    assert variants > 0  # the traditional branch's kept variants are drawn too
    s = json.loads((root / "data" / "dialogue" / "summary.json").read_text())
    assert s["splits"]["train"]["dialogues"] == 12 and s["splits"]["test"]["dialogues"] == 6
    assert s["turns"] == len(m)


def test_the_stage_is_deterministic_and_replays(project, tmp_path):
    import shutil

    from augdag import tasks

    p, root = project
    again = tmp_path / "again"
    shutil.copytree(root / "data", again / "data")
    shutil.rmtree(again / "data" / "dialogue")
    run_stage("dialogue", p, again)  # the same inputs: the same bytes
    name = "data/dialogue/manifest.parquet"
    assert (root / name).read_bytes() == (again / name).read_bytes()
    m = read_manifest(root / "data" / "dialogue")
    for split in ("train", "test"):
        sid = m[(m.split == split)].sample_id.iloc[-1]
        res = tasks.replay(root, sid, p)
        assert res["match"] and res["params_redrawn_match"]
    other = p.model_copy(update={"seed": p.seed + 1})
    assert not tasks.replay(root, m.sample_id.iloc[-1], other).get("params_redrawn_match")


def test_unknown_intent_is_named_and_nothing_is_written(project, tmp_path):
    p, root = project
    bad = parse_params({**p.model_dump(mode="json"), "text": {**p.model_dump(mode="json")["text"], "ingest": {
        **p.model_dump(mode="json")["text"]["ingest"], "classes": None}, "dialogue": {
        **p.model_dump(mode="json")["text"]["dialogue"], "start": {"Weather-Inform": 1.0},
        "transitions": {**p.text.dialogue.transitions, "Weather-Inform": {"end": 1.0}}}}})
    import shutil

    shutil.copytree(root / "data", tmp_path / "data")
    shutil.rmtree(tmp_path / "data" / "dialogue")
    with pytest.raises(DataError, match=r"intents \['Weather-Inform'\] are not classes"):
        run_stage("dialogue", bad, tmp_path)
    assert not (tmp_path / "data" / "dialogue").exists()


@pytest.mark.slow
def test_context_aware_finetune_and_evaluate_on_held_out_turns(project):
    import pandas as pd

    from augdag.text.dialogue import compose

    p, root = project
    run_stage("finetune", p, root)
    run_stage("evaluate", p, root)
    m = read_manifest(root / "data" / "dialogue")
    test = m[m.split == "test"]
    preds = pd.read_csv(root / "data" / "evaluate" / "predictions.csv")
    assert preds.sample_id.tolist() == test.sample_id.tolist()
    s = json.loads((root / "data" / "evaluate" / "summary.json").read_text())
    right = (preds.actual == preds.predicted).to_numpy()
    first = np.array([json.loads(o)["turn"] == 0 for o in test.op_params])
    assert s["n_test"] == len(test) and s["dialogue"]["turns"] == len(test)
    assert s["dialogue"]["accuracy_first_turn"] == round(float(right[first].mean()), 6)
    assert s["accuracy"] == round(float(right.mean()), 6)
    ft = json.loads((root / "data" / "finetune" / "summary.json").read_text())
    assert ft["dialogue"] == {"turns": int((m.split == "train").sum()), "context": 1}
    # what the model read: the turn, then the previous turn
    from augdag.tasks.dialogue.text import turns

    rows, items = turns(root, "test", 1)
    texts = dict(zip(m.sample_id, m.text))
    op = json.loads(rows.op_params.iloc[1])
    assert items[1] == compose(rows.text.iloc[1], [texts[i] for i in op["previous"]], 1)
    assert op["turn"] == 0 or " [SEP] " in items[1]
    run_stage("report", p, root)  # the report shows test dialogues with the predictions of evaluate
    import html

    page = (root / "data" / "report" / "report.html").read_text()
    first = test[[json.loads(o)["dialogue"] == "test00000" for o in test.op_params]]
    assert "Simulated dialogues" in page and all(html.escape(t) in page for t in first.text)
    pred = dict(zip(preds.sample_id, preds.predicted))
    assert f"<td>{pred[first.sample_id.iloc[0]]}" in page


def test_images_write_an_empty_dialogue_output(tmp_path):
    p = parse_params({})
    summary = run_stage("dialogue", p, tmp_path)
    assert summary["enabled"] is False and len(read_manifest(tmp_path / "data" / "dialogue")) == 0


def test_the_seeded_streams_are_the_documented_ones():
    chain = dialogue.Chain(START, ROWS)
    d = dialogue.simulate(chain, {k: [1.0, 2.0, 1.0] for k in ROWS}, 2, 8, 5, "train", weighted=True)
    g = rng(5, "dialogue", "train", 1)
    assert [t.intent for t in d[1]] == [i for i, _ in chain.walk(g, 8)]
