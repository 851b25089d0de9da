"""Back-translation: apertium (real, Debian packages) and MarianMT (a tiny random model built here)."""

import json
import os
import shutil
import warnings

import pytest
import torch

from augdag.errors import LineageError, ModelError
from augdag.text import translate as tr

# The first two, in one plain `apertium -z` batch, translate the second differently than alone ("puso" vs
# "poner"): the tagger keeps state across null flushes. The others: an empty text, special stream
# characters, a line break, an unknown word, a text without final punctuation.
TEXTS = [
    "In the process, they demonstrate that there's still a lot of life in Hong Kong cinema.",
    "A rip-roaring comedy action fest that'll put hairs on your chest.",
    "",
    "The [director's] cut ^costs$ 10 / 20 <dollars> {really} and is \\ #1 at a@b.com.",
    "I saw a xyzzyq yesterday.\nIt was dull",
    "Hollywood's answer to an air ball",
]


@pytest.fixture(scope="module")
def apertium():
    import shutil

    if shutil.which("apertium") is None:  # `make setup` installs it as root (Debian apertium apertium-eng-spa)
        if os.geteuid() == 0:  # CI runs as root: its absence there is a failure, not a skip
            pytest.fail("apertium is not installed: run `make setup` (installs apertium apertium-eng-spa as root)")
        pytest.skip("apertium is not installed: sudo apt-get install apertium apertium-eng-spa")
    return tr.ApertiumTranslator()


def test_apertium_batch_equals_one_by_one(apertium):
    batch = apertium.translate(TEXTS, "eng", "spa")
    one = [apertium.translate([t], "eng", "spa")[0] for t in TEXTS]
    assert batch == one
    assert batch[2] == ""
    assert all(b.strip() for i, b in enumerate(batch) if i != 2)
    assert "poner" in batch[1] or "puso" in batch[1]  # the word the tagger state decided
    again = apertium.translate(list(reversed(TEXTS)), "eng", "spa")
    assert list(reversed(again)) == batch  # order in the batch does not matter either


def test_apertium_marks_off_and_specials_survive(apertium):
    out = apertium.translate(TEXTS[3:5], "eng", "spa")
    assert "xyzzyq" in out[1] and "*xyzzyq" not in out[1]
    assert "#1" in out[0] and "a@b.com" in out[0] and "[" in out[0] and "^" in out[0]
    assert "\n" in out[1]  # the line break is kept
    assert "  " not in out[0] + out[1]


def test_apertium_identity(apertium):
    ident = apertium.identity
    assert ident.startswith("apertium:Apertium-") and "marks=off" in ident
    assert "eng-spa=" in ident and "spa-eng=" in ident
    assert tr.ApertiumTranslator(pairs=["eng-spa"]).identity != ident
    assert isinstance(apertium, tr.Translator)


def test_back_translate_records_and_replay(apertium):
    texts = [TEXTS[1], "Yes.", "", TEXTS[5]]
    recs = tr.back_translate(texts, apertium, pivot="spa")
    assert len(recs) == 4
    assert recs[1] is None and recs[2] is None  # "Yes." -> "Sí." -> "Yes.": nothing augmented
    r = recs[0]
    assert r["op"] == "back_translate" and r["translator"] == apertium.identity
    assert (r["src"], r["pivot"]) == ("eng", "spa")
    assert r["intermediate"] == apertium.translate([TEXTS[1]], "eng", "spa")[0]
    assert r["output"] != TEXTS[1] and r["changes"]
    assert all(c["op"] in ("replace", "insert", "delete") for c in r["changes"])
    json.dumps(recs)
    assert tr.replay(TEXTS[1], r, apertium) == r["output"]
    assert tr.replay(TEXTS[5], recs[3], apertium) == recs[3]["output"]
    with pytest.raises(LineageError, match="spa->eng gave"):
        tr.replay(TEXTS[1], {**r, "output": r["output"] + "!"}, apertium)
    with pytest.raises(LineageError, match="eng->spa gave"):
        tr.replay(TEXTS[5], r, apertium)  # the record belongs to another text
    with pytest.raises(LineageError, match="made by translator"):
        tr.replay(TEXTS[1], {**r, "translator": "apertium:other"}, apertium)


def test_apertium_errors(apertium, monkeypatch):
    with pytest.raises(ModelError, match=r"'eng-xxx'.*apertium-eng-xxx"):
        tr.ApertiumTranslator(pairs=["eng-xxx"])
    with pytest.raises(ValueError, match="'eng-fra' is not in this translator's pairs"):
        apertium.translate(["hi"], "eng", "fra")
    with pytest.raises(ValueError, match=r"texts\[1\]: expected str, got int"):
        apertium.translate(["hi", 3], "eng", "spa")
    with pytest.raises(ValueError, match="got one string"):
        apertium.translate("hi", "eng", "spa")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ModelError, match="apt-get install apertium apertium-eng-spa"):
        tr.ApertiumTranslator()


def test_word_changes():
    ch = tr.word_changes("the film was very good", "the movie was good indeed")
    assert ch == [{"op": "replace", "at": 1, "old": "film", "new": "movie"},
                  {"op": "delete", "at": 3, "old": "very", "new": ""},
                  {"op": "insert", "at": 5, "old": "", "new": "indeed"}]


# ------------------------------------------------------------------------------ MarianMT, tiny model

def _tiny_marian(root, corpus, seed):
    """A MarianMT folder: sentencepiece trained on `corpus`, random weights, saved as safetensors."""
    import sentencepiece as spm
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    work = root / "spm"
    work.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_prefix=str(work / "sp"), vocab_size=300,
                                   model_type="unigram", character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2,
                                   bos_id=-1, minloglevel=2, num_threads=1)
    sp = spm.SentencePieceProcessor(model_file=str(work / "sp.model"))
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    for name in ("source.spm", "target.spm"):
        shutil.copy(work / "sp.model", work / name)
    (work / "vocab.json").write_text(json.dumps(vocab))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Recommended: pip install sacremoses"
        tok = MarianTokenizer(source_spm=str(work / "source.spm"), target_spm=str(work / "target.spm"),
                              vocab=str(work / "vocab.json"), unk_token="<unk>", eos_token="</s>", pad_token="<pad>")
    cfg = MarianConfig(vocab_size=len(vocab), d_model=32, encoder_layers=1, decoder_layers=1,
                       encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                       max_position_embeddings=128, init_std=1.0, pad_token_id=0, eos_token_id=1,
                       decoder_start_token_id=0, forced_eos_token_id=1)
    torch.manual_seed(seed)
    folder = root / "model"
    MarianMTModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def marian_dirs(tmp_path_factory):
    from augdag.text.data import rotten_tomatoes

    corpus = rotten_tomatoes()["text"].head(300).tolist()
    root = tmp_path_factory.mktemp("marian")
    return {"eng-spa": _tiny_marian(root / "es", corpus, 0), "spa-eng": _tiny_marian(root / "en", corpus, 1)}, corpus


def test_marian_loads_from_folders_and_is_deterministic(marian_dirs):
    dirs, corpus = marian_dirs
    assert (dirs["eng-spa"] / "model.safetensors").is_file()
    m = tr.MarianTranslator(dirs, max_new_tokens=12)
    texts = corpus[:4] + [""]
    out = m.translate(texts, "eng", "spa")
    assert out[4] == "" and all(o for o in out[:4])
    assert len(set(out[:4])) > 1  # the output depends on the input
    assert out == [m.translate([t], "eng", "spa")[0] for t in texts]
    fresh = tr.MarianTranslator({("eng", "spa"): dirs["eng-spa"], "spa-eng": dirs["spa-eng"]}, max_new_tokens=12)
    assert fresh.translate(texts, "eng", "spa") == out  # a second load gives the same bytes
    assert fresh.identity == m.identity and "eng-spa=" in m.identity and "beams=1" in m.identity
    assert tr.MarianTranslator(dirs, max_new_tokens=12, num_beams=2).identity != m.identity


def test_marian_back_translate_replay(marian_dirs, tmp_path):
    dirs, corpus = marian_dirs
    m = tr.MarianTranslator(dirs, max_new_tokens=12)
    recs = tr.back_translate(corpus[:3], m, pivot="spa")
    assert all(r is not None and r["translator"] == m.identity for r in recs)
    assert tr.replay(corpus[1], recs[1], m) == recs[1]["output"]
    other = shutil.copytree(dirs["spa-eng"], tmp_path / "en2")
    shutil.copy(dirs["eng-spa"] / "model.safetensors", other / "model.safetensors")  # other weights
    m2 = tr.MarianTranslator({"eng-spa": dirs["eng-spa"], "spa-eng": other}, max_new_tokens=12)
    assert m2.identity != m.identity
    with pytest.raises(LineageError, match="made by translator"):
        tr.replay(corpus[1], recs[1], m2)


def test_marian_errors(marian_dirs, tmp_path):
    dirs, _ = marian_dirs
    with pytest.raises(ModelError, match="no config.json"):
        tr.MarianTranslator({"eng-spa": tmp_path / "missing"})
    bare = shutil.copytree(dirs["eng-spa"], tmp_path / "bare")
    (bare / "model.safetensors").unlink()
    m = tr.MarianTranslator({"eng-spa": bare})
    with pytest.raises(ModelError, match="has no model.safetensors"):
        m.translate(["hi"], "eng", "spa")
    with pytest.raises(ValueError, match="no MarianMT model for direction 'spa-eng'"):
        m.translate(["hi"], "spa", "eng")
    with pytest.raises(ValueError, match="'src-tgt'"):
        tr.MarianTranslator({"engspa": dirs["eng-spa"]})
