"""Per-sample quality scores of augmented samples, and the sliding-window outlier filter.

What each branch is judged by:

- **traditional**: PSNR and SSIM against its source, strategy-aware. Photometric ops (colour
  jitter, blur, noise, erasing) are compared directly. For geometric ops (flips, rotation, crop,
  affine) the recorded geometry is taken out of the comparison: the source is brought into the
  sample's frame with the sample's own recorded geometric params, and pixels that came from
  outside the source's frame are masked. This is the forward form of "undo the geometry": warping
  the sample back instead would interpolate a second time, which alone costs a 28-pixel image
  several dB (see README), so intact rotated samples would fail a 30 dB bar for being rotated.
  The geometric ops come first in the fixed op order, so the aligned source is exactly the image
  the photometric ops started from, and the scores measure what those ops did to it.
  `in_frame` is the share of the frame that still shows the source.
- **mix**: PSNR and SSIM against each parent, weighted by λ and 1 - λ (recorded; by default no
  threshold applies to them: a mixed sample is judged by label consistency and the outlier filter).
- **generative**: no source; judged by label consistency and the outlier filter.
- **every branch**: `label_prob`, the probability a reference classifier (a linear probe on the
  pretrained backbone's features, trained on the raw train split) gives the sample's label; for a
  soft (mixed) label, the expected probability sum_k y_k p_k.
- `outlier_z`: the sample's score (per branch, `quality.outlier.score`) in standard deviations from
  the mean of the `window_size` scores before it, in manifest order (the order the branch wrote
  them, independent of worker count). The first `MIN_HISTORY` samples of a branch have no z.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import torch

from augdag import imquality, ops

GEOMETRIC = frozenset({"hflip", "vflip", "rotation", "resized_crop", "affine"})
PHOTOMETRIC = frozenset(ops.OPS) - GEOMETRIC
MIN_HISTORY = 10
Z_CAP = 1e6  # a z-score against a constant window; finite so it can be stored as JSON


def aligned_source(source: np.ndarray, applied: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(the source warped by the recorded geometric ops only, HxW bool mask of pixels that lie
    wholly inside the source's frame)."""
    geo = [p for p in applied if p["op"] in GEOMETRIC]
    h, w = source.shape[:2]
    if not geo:
        return source, np.ones((h, w), bool)
    t, m = ops.to_tensor(source), torch.ones(1, h, w)
    for p in geo:
        t = ops.OPS[p["op"]].apply(t, p)
        m = ops.OPS[p["op"]].apply(m, p)
    return ops.to_uint8(t), (m[0] >= 1.0 - 1e-4).numpy()


def traditional_scores(sources: np.ndarray, samples: np.ndarray, applied: list[list[dict]]) -> dict[str, np.ndarray]:
    """psnr, ssim (masked, against the aligned source) and in_frame for N traditional samples."""
    if len(samples) == 0:
        return {k: np.zeros(0) for k in ("psnr", "ssim", "in_frame")}
    pairs = [aligned_source(s, a) for s, a in zip(sources, applied)]
    ref = np.stack([p[0] for p in pairs])
    mask = np.stack([p[1] for p in pairs])
    return {"psnr": imquality.psnr_batch(samples, ref, mask), "ssim": imquality.ssim_batch(samples, ref, mask),
            "in_frame": mask.reshape(len(mask), -1).mean(1)}


def mix_scores(parent_a: np.ndarray, parent_b: np.ndarray, samples: np.ndarray, lam: np.ndarray) -> dict[str, np.ndarray]:
    """psnr and ssim against each parent, weighted by λ (parent a) and 1 - λ (parent b)."""
    if len(samples) == 0:
        return {k: np.zeros(0) for k in ("psnr", "ssim")}
    lam = np.asarray(lam, np.float64)
    out = {}
    for name, fn in (("psnr", imquality.psnr_batch), ("ssim", imquality.ssim_batch)):
        out[name] = lam * fn(samples, parent_a) + (1.0 - lam) * fn(samples, parent_b)
    return out


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


class ReferenceClassifier:
    """A linear probe on the pretrained backbone's features, trained on the raw train split."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, n_classes: int, image_size: int = 64):
        from augdag.features import Embedder, LinearProbe

        self.n_classes = n_classes
        self.embed = Embedder(image_size=image_size)
        self.probe = LinearProbe(n_classes).fit(self.embed(images), labels)

    def proba(self, images: np.ndarray) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, self.n_classes))
        return self.probe.predict_proba(self.embed(images))
