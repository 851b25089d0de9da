"""Mixup and CutMix, offline (stored samples with two parents) and online (per batch in fine-tuning).

Mixup: Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018.
CutMix: Yun et al., "CutMix: Regularization Strategy to Train Strong Classifiers with Localizable
Features", ICCV 2019.

As in timm's `mixup.py`, drawing (`draw`) is kept apart from applying (`apply`, `mix_batch`): the
drawn λ, op and box are recorded, so a mixed sample can be replayed exactly. λ ~ Beta(α, α) per
sample; the CutMix box covers a (1 - λ) share of the image and λ is then corrected to the box's
exact area, so the soft label matches the pixels.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def cutmix_box(lam: float, h: int, w: int, rng: np.random.Generator) -> dict:
    """A box of about (1 - lam) of the area, centred uniformly, clipped to the image."""
    cut = math.sqrt(max(0.0, 1.0 - lam))
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
    top, bottom = max(cy - ch // 2, 0), min(cy + ch // 2 + ch % 2, h)
    left, right = max(cx - cw // 2, 0), min(cx + cw // 2 + cw % 2, w)
    return {"top": top, "left": left, "height": bottom - top, "width": right - left}


def draw(cfg, rng: np.random.Generator, h: int, w: int) -> dict:
    """Params of one mix: {'op', 'lam'} plus 'box' for CutMix. `cfg` has mode, alphas, cutmix_prob."""
    use_cutmix = cfg.mode == "cutmix" or (cfg.mode == "both" and rng.random() < cfg.cutmix_prob)
    if use_cutmix:
        lam = float(rng.beta(cfg.cutmix_alpha, cfg.cutmix_alpha))
        box = cutmix_box(lam, h, w, rng)
        lam = 1.0 - box["height"] * box["width"] / (h * w)
        return {"op": "cutmix", "lam": lam, "box": box}
    return {"op": "mixup", "lam": float(rng.beta(cfg.mixup_alpha, cfg.mixup_alpha))}


def apply(a: np.ndarray, b: np.ndarray, params: dict) -> np.ndarray:
    """Mix two HxWxC uint8 images by recorded params; pure and deterministic."""
    if a.shape != b.shape:
        raise ValueError(f"cannot mix images of shapes {a.shape} and {b.shape}")
    if params["op"] == "mixup":
        lam = np.float32(params["lam"])
        out = a.astype(np.float32) * lam + b.astype(np.float32) * (np.float32(1.0) - lam)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if params["op"] == "cutmix":
        box = params["box"]
        out = a.copy()
        sl = (slice(box["top"], box["top"] + box["height"]), slice(box["left"], box["left"] + box["width"]))
        out[sl] = b[sl]
        return out
    raise ValueError(f"unknown mix op {params['op']!r}; known: mixup, cutmix")


def soft_label(label_a: int, label_b: int, lam: float, n_classes: int) -> list[float]:
    y = np.zeros(n_classes, np.float64)
    y[label_a] += lam
    y[label_b] += 1.0 - lam
    return y.tolist()


class PartnerPools:
    """Candidate partners per sample, built once per train split (not once per mixed sample).

    The pool of sample i is every index allowed by the pairing mode, in ascending order, without i;
    the partner is pool[j] with j ~ U{0, len(pool) - 1} from the sample's own generator."""

    def __init__(self, pairing: str, labels: np.ndarray):
        if pairing not in ("any", "same_class", "cross_class"):
            raise ValueError(f"unknown pairing {pairing!r}; known: any, same_class, cross_class")
        self.pairing, self.labels = pairing, np.asarray(labels)
        self._all = np.arange(len(self.labels))
        self._cache: dict[int, np.ndarray] = {}

    def _full(self, label: int) -> np.ndarray:
        if self.pairing == "any":
            return self._all
        if label not in self._cache:
            same = self.labels == label
            self._cache[label] = np.flatnonzero(same if self.pairing == "same_class" else ~same)
        return self._cache[label]

    def pick(self, index: int, rng: np.random.Generator) -> int:
        full = self._full(int(self.labels[index]))
        with_self = self.pairing != "cross_class"
        n = len(full) - (1 if with_self else 0)
        if n <= 0:
            raise ValueError(f"no partner for pairing={self.pairing!r}")
        j = int(rng.integers(0, n))
        if with_self and j >= int(np.searchsorted(full, index)):
            j += 1
        return int(full[j])


def pick_partner(pairing: str, index: int, labels: np.ndarray, rng: np.random.Generator) -> int:
    """Index of the second parent for sample `index`, never itself (one-off form of PartnerPools)."""
    return PartnerPools(pairing, labels).pick(index, rng)


def check_pairing(pairing: str, labels: np.ndarray, class_names: list[str]) -> None:
    """Fail before any work when the train split cannot satisfy the pairing mode."""
    from augdag.errors import ParamsError

    counts = np.bincount(labels, minlength=len(class_names))
    present = np.flatnonzero(counts)
    if pairing == "cross_class" and len(present) < 2:
        raise ParamsError(f"params.yaml: mix.pairing = cross_class needs train samples of at least two classes; "
                          f"the train split has only {[class_names[i] for i in present]}")
    if pairing == "same_class":
        single = [class_names[i] for i in present if counts[i] < 2]
        if single:
            raise ParamsError(f"params.yaml: mix.pairing = same_class needs at least 2 train samples per class; "
                              f"classes with one: {single}")
    if pairing == "any" and len(labels) < 2:
        raise ParamsError("params.yaml: mixing needs at least 2 train samples")


def mix_batch(x: torch.Tensor, y: torch.Tensor, cfg, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Online mixing of one batch with per-sample λ: sample i is mixed with sample B-1-i (timm's
    flip pairing, so any batch size works; with an odd size the middle sample mixes with itself).
    A sample is mixed with probability cfg.prob. x: B x C x H x W float, y: B x K soft targets."""
    n, _, h, w = x.shape
    xf, yf = x.flip(0), y.flip(0)
    out_x, out_y = x.clone(), y.clone()
    for i in range(n):
        if rng.random() >= cfg.prob:
            continue
        p = draw(cfg, rng, h, w)
        lam = p["lam"]
        if p["op"] == "mixup":
            out_x[i] = x[i] * lam + xf[i] * (1.0 - lam)
        else:
            b = p["box"]
            out_x[i, :, b["top"]:b["top"] + b["height"], b["left"]:b["left"] + b["width"]] = \
                xf[i, :, b["top"]:b["top"] + b["height"], b["left"]:b["left"] + b["width"]]
        out_y[i] = y[i] * lam + yf[i] * (1.0 - lam)
    return out_x, out_y
