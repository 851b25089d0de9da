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

import numpy as np

from augdag import jit

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


@jit.specialised
def _window_kernel():
    """z of each score against the mean and population std of the ring buffer's scores, the buffer updated as
    it goes; mean and std in two passes over the buffer, oldest first (a fixed order)."""

    @jit.njit
    def window(scores, buf, state, need, cap, out):  # pragma: no cover (compiled)
        size = buf.shape[0]
        count, pos = state[0], state[1]  # scores held (<= size), the slot the next one goes to
        for i in range(scores.shape[0]):
            s = scores[i]
            out[i] = np.nan
            if s != s:  # NaN: no z, and it stays out of the window
                continue
            if count >= need:
                start = (pos - count) % size
                total = 0.0
                for k in range(count):
                    total += buf[(start + k) % size]
                mean = total / count
                sq = 0.0
                for k in range(count):
                    d = buf[(start + k) % size] - mean
                    sq += d * d
                std = np.sqrt(sq / count)
                if std > 0:
                    out[i] = min(max((s - mean) / std, -cap), cap)
                elif s == mean:
                    out[i] = 0.0
                else:
                    out[i] = cap if s > mean else -cap
            buf[pos] = s
            pos = (pos + 1) % size
            count = min(count + 1, size)
        state[0], state[1] = count, pos

    return window


class WindowZ:
    """window_z over a sequence that comes in parts: call it on each part in order; the window carries over,
    so the parts' z's are window_z of the whole sequence. A compiled scan (augdag.jit): ~1 µs a score."""

    def __init__(self, window_size: int, min_history: int = MIN_HISTORY):
        self.need = max(2, min(min_history, window_size))
        self.buf = np.zeros(max(1, window_size), np.float64)
        self.state = np.zeros(2, np.int64)

    def __call__(self, scores) -> np.ndarray:
        scores = np.ascontiguousarray(scores, dtype=np.float64)
        out = np.empty(len(scores), np.float64)
        if len(scores):
            _window_kernel()(scores, self.buf, self.state, self.need, Z_CAP, out)
        return out
