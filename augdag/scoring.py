"""Per-sample scores that both quality gates (images: tasks/quality, texts: augdag.text.gate) compute, and
the merged suite's derived soft-label sum.

- ``label_prob``: the probability a reference classifier gives a sample's label; for a soft (mixed) label y,
  the expected probability sum_k y_k p_k.
- ``soft_label_sum``: each row's soft label summed (1.0 for a hard label).
- ``window_z`` / ``WindowZ``: the outlier score, a sample's score in standard deviations from the mean of the
  ``window_size`` scores before it, in manifest order (the order the branch wrote them, independent of
  worker count). The first ``MIN_HISTORY`` samples of a branch have no z.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

MIN_HISTORY = 10
Z_CAP = 1e6  # a z-score against a constant window; finite so it can be stored as JSON


def label_prob(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """sum_k y_k p_k per row: the reference's probability of the (possibly soft) label."""
    return (np.asarray(probs, np.float64) * np.asarray(targets, np.float64)).sum(1)


def soft_label_sum(soft_labels) -> list[float]:
    """Sum of each row's soft label; 1.0 for a hard-labelled row (no soft label)."""
    return [float(np.sum(s)) if s is not None and len(s) else 1.0 for s in soft_labels]


def window_z(scores, window_size: int, min_history: int = MIN_HISTORY) -> np.ndarray:
    """z of each score against the mean and (population) std of the `window_size` scores before it.

    NaN where the score is NaN or fewer than min(min_history, window_size) scores came before it;
    NaN scores do not enter the window. A score that differs from a constant window gets ±Z_CAP.
    """
    return WindowZ(window_size, min_history)(scores)


class WindowZ:
    """window_z over a sequence that comes in parts: call it on each part in order; the window carries over,
    so the parts' z's are window_z of the whole sequence."""

    def __init__(self, window_size: int, min_history: int = MIN_HISTORY):
        self.need = max(2, min(min_history, window_size))
        self.win: deque[float] = deque(maxlen=window_size)

    def __call__(self, scores) -> np.ndarray:
        win, need = self.win, self.need
        out = np.full(len(scores), np.nan)
        for i, s in enumerate(np.asarray(scores, np.float64)):
            if math.isnan(s):
                continue
            if len(win) >= need:
                a = np.fromiter(win, np.float64)
                mean, std = a.mean(), a.std()
                if std > 0:
                    out[i] = float(np.clip((s - mean) / std, -Z_CAP, Z_CAP))
                else:
                    out[i] = 0.0 if s == mean else math.copysign(Z_CAP, s - mean)
            win.append(float(s))
        return out
