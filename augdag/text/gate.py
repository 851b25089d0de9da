"""Per-sample quality scores of augmented texts, and the text branch suite's parameters.

Scores of a variant against its source (``text_scores``):

- ``semantic_similarity``: cosine of the MiniLM sentence embeddings of source and variant
  (``augdag.text.encoder.embed``: L2-normalised, batch-independent), in [-1, 1].
- ``label_prob``: the reference classifier's probability of the sample's label; for a soft label
  y, the expected probability sum_k y_k p_k (``augdag.scoring.label_prob``). The reference is a
  linear probe (``augdag.features.LinearProbe``: multinomial logistic regression, full-batch
  L-BFGS in float64, deterministic) on the frozen encoder's embeddings of the raw train texts, as
  the image side's reference classifier (tasks/quality/scores.py).
- ``length_ratio``: the variant's word count over the source's (whitespace words); NaN for an
  empty source.
- ``is_duplicate``: the variant equals the source after whitespace is collapsed and case folded.

A Mixup item (``mix_scores``: text_a, text_b, lam; the sample is an embedding, not a text) gets
``label_prob`` from the reference on the lam-mix of the two normalised embeddings, and
``semantic_similarity`` = lam * cos(mix, a) + (1 - lam) * cos(mix, b); length and duplicate do
not apply (NaN / None, which Great Expectations' column checks skip).

``outlier_z`` is ``augdag.scoring.window_z`` (the sliding-window 2-sigma filter) on one score column
in manifest order. ``augdag.checks.TEXT_BRANCH`` is the gate (expectations/text_branch.json, which Great
Expectations validates, and the per-sample row checks); ``suite_parameters`` gives its parameters and
thresholds, and ``augdag.checks.gate_frame`` runs it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from augdag import scoring
from augdag.text import encoder

SCORES = ("semantic_similarity", "label_prob", "length_ratio", "is_duplicate")


def normalize_text(text: str) -> str:
    """Whitespace collapsed to single spaces, stripped, case folded: the duplicate test's key."""
    return " ".join(text.split()).casefold()


def is_duplicate(sources: Sequence[str | None], variants: Sequence[str]) -> list[bool | None]:
    """variant == source after ``normalize_text``; None where there is no source."""
    _same_length(sources, variants)
    return [None if s is None else normalize_text(s) == normalize_text(v) for s, v in zip(sources, variants)]


def length_ratio(sources: Sequence[str | None], variants: Sequence[str]) -> np.ndarray:
    """Words in the variant / words in the source (whitespace split); NaN for no or an empty source."""
    _same_length(sources, variants)
    out = np.full(len(variants), np.nan)
    for i, (s, v) in enumerate(zip(sources, variants)):
        n = len(s.split()) if s is not None else 0
        if n:
            out[i] = len(v.split()) / n
    return out


def _same_length(sources, variants) -> None:
    if len(sources) != len(variants):
        raise ValueError(f"sources ({len(sources)}) and variants ({len(variants)}) must have the same length")


def _embed_unique(texts: Sequence[str], batch_size: int, max_length: int) -> dict[str, np.ndarray]:
    """{text: embedding} for the distinct texts (embed is batch-independent, so this changes no byte)."""
    uniq = sorted(set(texts))
    return dict(zip(uniq, encoder.embed(uniq, batch_size=batch_size, max_length=max_length)))


def semantic_similarity(sources: Sequence[str | None], variants: Sequence[str], batch_size: int = 64,
                        max_length: int = encoder.MAX_LENGTH) -> np.ndarray:
    """Cosine of the MiniLM embeddings of each source and its variant, clipped to [-1, 1]; NaN without source."""
    _same_length(sources, variants)
    encoder.check_texts(variants, "variants")
    encoder.check_texts([s for s in sources if s is not None], "sources")
    emb = _embed_unique([t for t in list(sources) + list(variants) if t is not None], batch_size, max_length)
    out = np.full(len(variants), np.nan)
    rows = [i for i, s in enumerate(sources) if s is not None]
    if rows:
        a = np.stack([emb[sources[i]] for i in rows])
        b = np.stack([emb[variants[i]] for i in rows])
        out[rows] = np.clip(encoder.cosine(a, b), -1.0, 1.0)
    return out


def _targets(targets, n: int, n_classes: int) -> np.ndarray:
    """[n, n_classes] probability rows from per-sample class indices or soft labels."""
    if len(targets) != n:
        raise ValueError(f"targets: {len(targets)} for {n} samples")
    y = np.zeros((n, n_classes))
    for i, t in enumerate(targets):
        if np.ndim(t) == 0:
            if isinstance(t, bool) or not float(t).is_integer() or not 0 <= int(t) < n_classes:
                raise ValueError(f"targets[{i}] = {t!r}: expected a class index 0..{n_classes - 1} or a soft label")
            y[i, int(t)] = 1.0
        else:
            row = np.asarray(t, np.float64)
            if row.shape != (n_classes,):
                raise ValueError(f"targets[{i}]: soft label of {row.size} classes; the dataset has {n_classes}")
            y[i] = row
    return y


class TextReference:
    """Linear probe on frozen MiniLM embeddings of the raw train texts (the label-consistency judge)."""

    def __init__(self, texts: Sequence[str], labels, n_classes: int, batch_size: int = 64,
                 max_length: int = encoder.MAX_LENGTH, l2: float = 1e-3):
        from augdag.features import LinearProbe

        texts = encoder.check_texts(texts, "reference texts")
        labels = np.array(labels, dtype=np.int64)  # a copy: pandas 3 hands out read-only arrays
        if len(texts) != len(labels) or not len(texts):
            raise ValueError(f"reference classifier: {len(texts)} texts and {len(labels)} labels; "
                             "need the same number, at least one")
        if labels.min() < 0 or labels.max() >= n_classes:
            raise ValueError(f"reference classifier: labels must be class indices 0..{n_classes - 1}")
        self.n_classes, self.batch_size, self.max_length = n_classes, batch_size, max_length
        feats = self.embed(texts)
        self.probe = LinearProbe(n_classes, l2=l2).fit(feats, labels)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return encoder.embed(texts, batch_size=self.batch_size, max_length=self.max_length).astype(np.float64)

    def proba_embeddings(self, emb: np.ndarray) -> np.ndarray:
        """Class probabilities [N, K] of (normalised) sentence embeddings."""
        if len(emb) == 0:
            return np.zeros((0, self.n_classes))
        return self.probe.predict_proba(np.asarray(emb, np.float64))

    def proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.proba_embeddings(self.embed(encoder.check_texts(texts)))


def text_scores(sources: Sequence[str | None], variants: Sequence[str], targets=None,
                reference: TextReference | None = None, batch_size: int = 64,
                max_length: int = encoder.MAX_LENGTH) -> dict[str, np.ndarray | list]:
    """semantic_similarity, label_prob (NaN without a reference or targets), length_ratio, is_duplicate.

    targets: per sample a class index or a soft label (a probability vector)."""
    variants = encoder.check_texts(variants, "variants")
    n = len(variants)
    out: dict = {"semantic_similarity": semantic_similarity(sources, variants, batch_size, max_length),
                 "label_prob": np.full(n, np.nan), "length_ratio": length_ratio(sources, variants),
                 "is_duplicate": is_duplicate(sources, variants)}
    if reference is not None and targets is not None and n:
        y = _targets(targets, n, reference.n_classes)
        out["label_prob"] = scoring.label_prob(reference.proba(variants), y)
    return out


def mix_scores(text_a: Sequence[str], text_b: Sequence[str], lam, targets=None,
               reference: TextReference | None = None, batch_size: int = 64,
               max_length: int = encoder.MAX_LENGTH) -> dict[str, np.ndarray | list]:
    """Scores of embedding-Mixup items (see the module note); targets are their lam-mixed soft labels."""
    text_a = encoder.check_texts(text_a, "text_a")
    text_b = encoder.check_texts(text_b, "text_b")
    lam = np.asarray(lam, np.float64).reshape(-1)
    n = len(text_a)
    if len(text_b) != n or len(lam) != n:
        raise ValueError(f"mix_scores: text_a ({n}), text_b ({len(text_b)}) and lam ({len(lam)}) "
                         "must have the same length")
    if n and (not np.isfinite(lam).all() or lam.min() < 0 or lam.max() > 1):
        raise ValueError("mix_scores: lam must lie in [0, 1]")
    out: dict = {"semantic_similarity": np.zeros(n), "label_prob": np.full(n, np.nan),
                 "length_ratio": np.full(n, np.nan), "is_duplicate": [None] * n}
    if not n:
        return out
    emb = _embed_unique(text_a + text_b, batch_size, max_length)
    ea = np.stack([emb[t] for t in text_a]).astype(np.float64)
    eb = np.stack([emb[t] for t in text_b]).astype(np.float64)
    mixed = lam[:, None] * ea + (1.0 - lam[:, None]) * eb
    out["semantic_similarity"] = np.clip(lam * encoder.cosine(mixed, ea) + (1.0 - lam) * encoder.cosine(mixed, eb),
                                         -1.0, 1.0)
    if reference is not None and targets is not None:
        out["label_prob"] = scoring.label_prob(reference.proba_embeddings(mixed),
                                               _targets(targets, n, reference.n_classes))
    return out


def outlier_z(scores, window_size: int = 100, min_history: int = scoring.MIN_HISTORY) -> np.ndarray:
    """z of each score against the window of scores before it (``augdag.scoring.window_z``), manifest order."""
    return scoring.window_z(scores, window_size, min_history)


def suite_parameters(label_set: Sequence, text_length: tuple[int, int] = (1, 2000),
                     english_share_min: float | None = 0.5, similarity_min: float | None = 0.7,
                     label_prob_min: float | None = 0.1, sigma: float | None = 2.0) -> dict:
    """The parameters of the text gate (augdag.checks.TEXT_BRANCH): the suite's label_set and the row checks'
    thresholds (text_length in characters); a None threshold turns its check off."""
    lo, hi = text_length
    if not 0 <= lo <= hi:
        raise ValueError(f"text_length must be [min, max] characters with 0 <= min <= max, got {list(text_length)}")
    opt = lambda v: None if v is None else float(v)  # noqa: E731
    return {"label_set": list(label_set), "text_length": (int(lo), int(hi)),
            "english_share_min": opt(english_share_min), "similarity_min": opt(similarity_min),
            "label_prob_min": opt(label_prob_min), "sigma": opt(sigma)}
