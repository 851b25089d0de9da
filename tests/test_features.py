import numpy as np
import pytest

from augdag.data import load_fashion_mnist
from augdag.features import Embedder, LinearProbe, frechet_distance


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    g = np.random.default_rng(0)
    a = g.normal(0.0, 1.0, (4000, 3))
    b = g.normal(1.0, 2.0, (4000, 3))
    # (mu diff)^2 = 3; trace term per dim: 1 + 4 - 2*sqrt(1*4) = 1 -> 3
    assert frechet_distance(a, b) == pytest.approx(6.0, rel=0.05)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        frechet_distance(a[:1], b)


@pytest.mark.slow
def test_embedder_and_probe_separate_real_classes():
    pool = load_fashion_mnist("train")
    g = np.random.default_rng(0)
    idx = np.concatenate([g.choice(np.flatnonzero(pool.labels == c), 60, replace=False) for c in range(10)])
    tr, te = idx.reshape(10, 60)[:, :20].ravel(), idx.reshape(10, 60)[:, 20:].ravel()
    emb = Embedder(image_size=64)
    f_tr, f_te = emb(pool.images[tr]), emb(pool.images[te])
    assert f_tr.shape == (200, 1280)
    probe = LinearProbe(10).fit(f_tr, pool.labels[tr])
    acc = (probe.predict_proba(f_te).argmax(1) == pool.labels[te]).mean()
    assert acc > 0.65, acc  # 0.77 measured; chance is 0.10
    np.testing.assert_allclose(probe.predict_proba(f_te).sum(1), 1.0)
    # real vs real from the same classes is closer than real vs one class only
    same = frechet_distance(f_tr, f_te)
    one = frechet_distance(f_tr, emb(pool.images[np.flatnonzero(pool.labels == 1)[:100]]))
    assert same < one
