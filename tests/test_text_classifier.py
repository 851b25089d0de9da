"""augdag.text.classifier: MiniLM fine-tune with a head, embedding Mixup, soft labels, weights, save/load.

Real MiniLM and real Rotten Tomatoes snippets (fresh vs rotten). The full fine-tunes run a few
steps on a handful of texts; the frozen-encoder mode (cached embeddings, head only) carries the
tests that need many steps.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from augdag.errors import DataError, ModelError
from augdag.seeding import rng
from augdag.text import classifier as C

CLASSES = ["fresh", "rotten"]


@pytest.fixture(scope="module")
def rt():
    """(train texts, labels) 20 per class and (test texts, labels) 100 per class, a seeded sample."""
    from augdag.text.assets import rotten_tomatoes_path

    torch.set_num_threads(1)
    d = pd.read_csv(rotten_tomatoes_path())
    d = d[d.category.isin(CLASSES)].dropna(subset=["text"]).drop_duplicates("text").sort_values("text")
    tr, te = [], []
    for label, name in enumerate(CLASSES):
        texts = d.text[d.category == name].tolist()
        perm = rng(0, "test-text-classifier", name).permutation(len(texts))
        tr += [(texts[i], label) for i in perm[:20]]
        te += [(texts[i], label) for i in perm[20:120]]
    return [t for t, _ in tr], np.array([y for _, y in tr]), [t for t, _ in te], np.array([y for _, y in te])


def state_bytes(model) -> bytes:
    return b"".join(v.numpy().tobytes() for _, v in sorted(model.state_dict().items()))


def head_bytes(model) -> bytes:
    return model.head.weight.detach().numpy().tobytes() + model.head.bias.detach().numpy().tobytes()


FROZEN = dict(freeze_encoder=True, batch_size=16, head_lr=5e-3, eval_every=50)


@pytest.mark.slow
def test_frozen_head_learns_real_task_and_is_deterministic(rt):
    xtr, ytr, xte, yte = rt
    cfg = C.FinetuneConfig(steps=150, **FROZEN)
    res = C.fine_tune(xtr, ytr, CLASSES, config=cfg, val_texts=xte[::10], val_labels=yte[::10])
    ev = res.model.evaluate(xte, yte)
    assert ev["accuracy"] > 0.6, ev  # 200 balanced test texts: chance is 0.5 (sd 0.035)
    assert res.curve[-1]["train_loss"] < res.curve[0]["train_loss"] < 0.75
    assert [p["step"] for p in res.curve] == [50, 100, 150]
    assert res.curve[-1]["val_accuracy"] == res.model.evaluate(xte[::10], yte[::10])["accuracy"]
    assert np.array(ev["confusion"]).sum() == 200 and set(ev["per_class"]) == set(CLASSES)
    assert ev["per_class"]["fresh"]["support"] == 100
    again = C.fine_tune(xtr, ytr, CLASSES, config=cfg)
    assert head_bytes(again.model) == head_bytes(res.model)
    other = C.fine_tune(xtr, ytr, CLASSES, config=C.FinetuneConfig(steps=150, seed=1, **FROZEN))
    assert head_bytes(other.model) != head_bytes(res.model)


@pytest.mark.slow
def test_full_finetune_with_pairs_reduces_loss_and_round_trips(rt, tmp_path):
    xtr, ytr, _, _ = rt
    texts, labels = xtr[:4] + xtr[20:24], np.r_[ytr[:4], ytr[20:24]]
    pairs = [C.Pair(texts[0], texts[5], 0.7), C.Pair(texts[6], texts[1], 0.4)]
    targets = np.vstack([np.eye(2)[labels], C.pair_target(0, 1, 0.7, 2), C.pair_target(1, 0, 0.4, 2)])
    cfg = C.FinetuneConfig(steps=5, batch_size=6, lr=1e-4, eval_every=5)
    before = C.fine_tune(texts + pairs, targets, CLASSES, config=C.FinetuneConfig(steps=1, batch_size=1, lr=1e-12,
                                                                                 head_lr=1e-12))
    res = C.fine_tune(texts + pairs, targets, CLASSES, config=cfg)
    assert res.model.evaluate(texts, labels)["loss"] < before.model.evaluate(texts, labels)["loss"] - 0.02
    assert any(not torch.equal(a, b) for a, b in zip(res.model.encoder.parameters(), before.model.encoder.parameters()))

    probs = res.model.predict_proba(texts)
    assert probs.dtype == np.float64 and probs.shape == (8, 2)
    np.testing.assert_allclose(probs.sum(1), 1.0)
    assert res.model.predict_proba(texts[::-1], batch_size=1)[::-1].tobytes() == probs.tobytes()
    for part in (slice(2, 5), slice(0, 8, 3), *(slice(i, i + 1) for i in range(8))):  # other neighbours, same bytes
        assert res.model.predict_proba(texts[part]).tobytes() == probs[part].tobytes(), part
    assert res.model.predict_proba(texts * 4).tobytes() == np.tile(probs, (4, 1)).tobytes()  # 32 rows

    res.model.save(tmp_path / "clf")
    assert {"model.safetensors", "classifier.json", "tokenizer.json"} <= {p.name for p in (tmp_path / "clf").iterdir()}
    loaded = C.TextClassifier.load(tmp_path / "clf")
    assert loaded.classes == CLASSES and loaded.train_config["steps"] == 5
    assert loaded.predict_proba(texts).tobytes() == probs.tobytes()
    assert state_bytes(loaded) == state_bytes(res.model)


def test_zero_weight_item_has_no_effect(rt):
    xtr, ytr, _, _ = rt
    texts, labels = xtr[:3] + xtr[20:23], list(ytr[:3]) + list(ytr[20:23])
    cfg = C.FinetuneConfig(steps=2, batch_size=4)
    base = C.fine_tune(texts, labels, CLASSES, weights=[1, 2, 1, 1, 1, 2], config=cfg)
    # an extra item in the middle with weight 0 and a contrary label: never drawn, nothing changes
    extra = texts[:3] + ["An utterly different review that would change the model."] + texts[3:]
    with_zero = C.fine_tune(extra, labels[:3] + [1] + labels[3:], CLASSES, weights=[1, 2, 1, 0, 1, 1, 2], config=cfg)
    assert state_bytes(with_zero.model) == state_bytes(base.model)
    # a positive weight on it does change the model (the check above could fail)
    frozen = C.FinetuneConfig(steps=20, **FROZEN)
    a = C.fine_tune(extra, labels[:3] + [1] + labels[3:], CLASSES, weights=[1, 2, 1, 0, 1, 1, 2], config=frozen)
    b = C.fine_tune(extra, labels[:3] + [1] + labels[3:], CLASSES, weights=[1, 2, 1, 5, 1, 1, 2], config=frozen)
    assert head_bytes(a.model) != head_bytes(b.model)


def test_mixup_pairs_mix_pooled_embeddings(rt):
    xtr, ytr, _, _ = rt
    cfg = C.FinetuneConfig(steps=30, **FROZEN)
    plain = C.fine_tune(xtr, ytr, CLASSES, config=cfg)
    # lam = 1: the pair's embedding is exactly text_a's, so the model is exactly the plain one
    as_pairs = [C.Pair(t, xtr[-1], 1.0) for t in xtr]
    same = C.fine_tune(as_pairs, ytr, CLASSES, config=cfg)
    assert head_bytes(same.model) == head_bytes(plain.model)
    # real pairs with their lam-mixed soft labels change the result
    g = rng(0, "test-mix")
    pairs, soft = [], []
    for _ in range(40):
        a, b = g.choice(40, 2, replace=False)
        lam = float(g.beta(0.4, 0.4))
        pairs.append((xtr[a], xtr[b], lam))  # a plain tuple is accepted too
        soft.append(C.pair_target(ytr[a], ytr[b], lam, 2))
    mixed = C.fine_tune(list(xtr) + pairs, np.vstack([np.eye(2)[ytr], soft]), CLASSES, config=cfg)
    assert head_bytes(mixed.model) != head_bytes(plain.model)


def test_soft_labels_are_the_targets(rt):
    xtr, _, _, _ = rt
    texts = xtr[:10]
    cfg = C.FinetuneConfig(steps=300, **{**FROZEN, "head_lr": 2e-2, "dropout": 0.0, "weight_decay": 0.0})
    res = C.fine_tune(texts, np.tile([0.75, 0.25], (10, 1)), CLASSES, config=cfg)
    p = res.model.predict_proba(texts)[:, 0]
    # soft-target CE is minimal at the target, not at 1.0 (Adam's steps keep it near, not on, 0.75)
    assert abs(p.mean() - 0.75) < 0.03 and np.abs(p - 0.75).max() < 0.08, p
    hard = C.fine_tune(texts, np.zeros(10, int), CLASSES, config=cfg)
    assert hard.model.predict_proba(texts)[:, 0].min() > 0.9


def test_evaluate_metrics_on_known_probabilities():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    ev = C.evaluate_probs(probs, C.labels_to_index(["fresh", "rotten", "rotten", "rotten"], CLASSES), CLASSES)
    assert ev["accuracy"] == 0.75 and ev["confusion"] == [[1, 0], [1, 2]]
    assert ev["per_class"]["fresh"] == {"precision": 0.5, "recall": 1.0, "f1": 0.666667, "support": 1}
    assert ev["per_class"]["rotten"]["precision"] == 1.0 and ev["per_class"]["rotten"]["recall"] == 0.666667
    assert ev["loss"] == round(float(-np.mean(np.log([0.9, 0.8, 0.4, 0.7]))), 6)


def test_errors_name_the_problem(rt, tmp_path):
    xtr, ytr, _, _ = rt
    with pytest.raises(ValueError, match=r"steps = 0; allowed: an integer >= 1"):
        C.FinetuneConfig(steps=0)
    with pytest.raises(ValueError, match="dropout"):
        C.FinetuneConfig(dropout=1.0)
    with pytest.raises(ValueError, match=r"weights\[1\] = -1.0"):
        C.fine_tune(xtr[:2], [0, 1], CLASSES, weights=[1, -1])
    with pytest.raises(ValueError, match="all zero"):
        C.fine_tune(xtr[:2], [0, 1], CLASSES, weights=[0, 0])
    with pytest.raises(ValueError, match=r"targets\[1\] = 2: expected a class index 0..1"):
        C.fine_tune(xtr[:2], [0, 2], CLASSES)
    with pytest.raises(ValueError, match="sum to 1"):
        C.fine_tune(xtr[:2], [[0.5, 0.6], [1, 0]], CLASSES)
    with pytest.raises(ValueError, match=r"items\[1\]: Mixup lam must be a number in \[0, 1\]"):
        C.fine_tune([xtr[0], C.Pair(xtr[1], xtr[2], 1.5)], [0, 1], CLASSES)
    with pytest.raises(ValueError, match=r"labels\[0\] = 'plot' is not a class"):
        C.labels_to_index(["plot"], CLASSES)
    with pytest.raises(DataError, match="no training items"):
        C.fine_tune([], [], CLASSES)
    with pytest.raises(ModelError, match="classifier.json is missing"):
        C.TextClassifier.load(tmp_path)
    (tmp_path / "classifier.json").write_text('{"format": "other"}')
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelError, match="not an augdag text classifier"):
        C.TextClassifier.load(tmp_path)


def test_contrastive_pairs_are_setfits_pairs():
    labels = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([1, 1, 1, 1, 0, 1], float) / 5  # the second class-1 text has weight 0: never drawn
    pairs = C.contrastive_pairs(labels, p, 400, seed=3, step=1)
    assert pairs.shape == (400, 3)
    for k, (i, j, t) in enumerate(pairs):
        assert i != j and t == int(labels[i] == labels[j]) and 4 not in (i, j)
        # even positions pair within the class where it has another member (class 0), odd ones across
        assert t == (k % 2 == 0 and labels[i] == 0)
    assert set(pairs[:, 0]) == {0, 1, 2, 3, 5}
    assert (C.contrastive_pairs(labels, p, 400, 3, 1) == pairs).all()
    assert not np.array_equal(C.contrastive_pairs(labels, p, 400, 3, 2), pairs)


@pytest.mark.slow
def test_contrastive_encoder_then_head_is_deterministic_and_better_than_chance(rt):
    xtr, ytr, xte, yte = rt
    texts, labels = xtr[:6] + xtr[20:26], np.r_[ytr[:6], ytr[20:26]]
    cfg = C.FinetuneConfig(steps=40, contrastive_steps=3, **FROZEN)
    res = C.fine_tune(texts + [C.Pair(texts[0], texts[7], 0.6)],
                      np.vstack([np.eye(2)[labels], C.pair_target(0, 1, 0.6, 2)]), CLASSES, config=cfg)
    pretrained = C.new_classifier(CLASSES)
    # the encoder moved (contrastive phase), then stayed frozen while the head learned
    assert any(not torch.equal(a, b) for a, b in zip(res.model.encoder.parameters(),
                                                     pretrained.encoder.parameters()))
    assert res.curve[-1]["train_loss"] < 0.5
    again = C.fine_tune(texts + [C.Pair(texts[0], texts[7], 0.6)],
                        np.vstack([np.eye(2)[labels], C.pair_target(0, 1, 0.6, 2)]), CLASSES, config=cfg)
    assert state_bytes(again.model) == state_bytes(res.model)
    with pytest.raises(DataError, match="two classes"):
        C.fine_tune(texts[:6], labels[:6], CLASSES, config=cfg)
    with pytest.raises(ValueError, match="contrastive_steps"):
        C.FinetuneConfig(contrastive_steps=-1)
