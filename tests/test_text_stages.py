"""Text stages one at a time (no Prefect, no DVC): ingest from the user's file, bad input, determinism."""

import json

import pandas as pd
import pytest

from augdag.errors import DataError, ParamsError
from augdag.params import load_params, parse_params
from augdag.storage import read_manifest
from augdag.tasks import run_stage

WORDS = ["good", "bad", "fine", "dull", "bright", "slow", "quick", "warm", "cold", "long", "short", "kind"]


def _csv(path, n=12):
    rows = [{"review": f"The {WORDS[i % 12]} film number {i} was {lab} indeed.", "sentiment": lab}
            for lab in ("pos", "neg") for i in range(n)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _params(source, **text):
    return parse_params({"modality": "text", "text": {
        "ingest": {"source": str(source), "text_column": "review", "label_column": "sentiment",
                   "n_per_class": 3, "n_val_per_class": 2, "n_test_per_class": 4}, **text}})


def test_ingest_a_csv_split_and_suites(tmp_path):
    p = _params(_csv(tmp_path / "r.csv"))
    summary = run_stage("ingest", p, tmp_path / "proj")
    assert summary == {"classes": 2, "modality": "text", "train": 6, "val": 4, "test": 8}
    m = read_manifest(tmp_path / "proj" / "data" / "ingest")
    classes = json.loads((tmp_path / "proj" / "data" / "ingest" / "classes.json").read_text())
    assert classes == {"classes": ["neg", "pos"]}
    assert m.text.str.contains("indeed").all() and set(m.branch) == {"raw"}
    # labels follow the class list; every text is in exactly one split
    assert all(("pos" in t) == (lab == 1) for t, lab in zip(m.text, m.label)) and m.text.is_unique
    assert (tmp_path / "proj" / "data" / "validation" / "ingest" / "text_raw.json").exists()


def test_same_params_same_bytes_and_seed_matters(tmp_path):
    src = _csv(tmp_path / "r.csv")
    out = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        p = _params(src).model_copy(update={"seed": seed})
        root = tmp_path / name
        for stage in ("ingest", "strategy", "traditional", "mix"):
            run_stage(stage, p, root)
        out[name] = [(root / "data" / s / "manifest.parquet").read_bytes() for s in ("ingest", "traditional", "mix")]
    assert out["a"] == out["b"] and out["a"] != out["c"]


@pytest.mark.parametrize("text, message", [
    ({"ingest": {"source": "missing.csv"}}, "missing.csv: file not found"),
    ({"ingest": {"source": "r.csv", "label_column": "stars"}}, "no label column 'stars'"),
    ({"ingest": {"source": "r.csv", "n_test_per_class": 50}}, "at least 53 are needed"),
])
def test_bad_text_input_names_file_and_key(tmp_path, text, message):
    _csv(tmp_path / "r.csv")
    base = {"text_column": "review", "label_column": "sentiment", "n_per_class": 3, "n_val_per_class": 2,
            "n_test_per_class": 4}
    ingest = {**base, **text["ingest"], "source": str(tmp_path / text["ingest"]["source"])}
    p = parse_params({"modality": "text", "text": {"ingest": ingest}})
    with pytest.raises(DataError, match=message):
        run_stage("ingest", p, tmp_path / "proj")
    assert not (tmp_path / "proj" / "data" / "ingest").exists()  # nothing half-written


def test_bad_text_params_name_the_key():
    with pytest.raises(ParamsError, match=r"text\.generative\.methods\.0 = 'summarise'"):
        parse_params({"modality": "text", "text": {"generative": {"methods": ["summarise"]}}})
    with pytest.raises(ParamsError, match=r"modality = 'video'"):
        parse_params({"modality": "video"})
    with pytest.raises(ParamsError, match=r"text\.quality\.text_length"):
        parse_params({"text": {"quality": {"text_length": [10, 2]}}})


def test_text_stage_on_an_image_ingest_says_so(tmp_path):
    from helpers import REPO

    img = load_params(REPO / "params.yaml", {"ingest": {"n_per_class": 1, "n_val_per_class": 0, "n_test_per_class": 1}})
    run_stage("ingest", img, tmp_path)
    run_stage("strategy", img, tmp_path)
    with pytest.raises(DataError, match="holds images, not texts"):
        run_stage("traditional", img.model_copy(update={"modality": "text"}), tmp_path)


def test_marian_needs_both_directions(tmp_path):
    from augdag.tasks.generative.text import make_translator

    p = parse_params({"modality": "text", "text": {"generative": {"translator": "marian",
                                                                   "marian": {"eng-spa": str(tmp_path)}}}})
    with pytest.raises(ParamsError, match=r"text\.generative\.marian lacks direction\(s\) \['spa-eng'\]"):
        make_translator(p)
