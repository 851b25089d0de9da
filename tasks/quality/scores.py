"""Per-sample quality scores of augmented images.

What each branch is judged by:

- **traditional**: PSNR and SSIM against its source, strategy-aware. Photometric ops (colour
  jitter, blur, noise, erasing) are compared directly. For geometric ops (flips, rotation, crop,
  affine) the recorded geometry is taken out of the comparison: the source is brought into the
  sample's frame with the sample's own recorded geometric params, and pixels that came from
  outside the source's frame are masked. This is the forward form of "undo the geometry": warping
  the sample back instead would interpolate a second time, which alone costs a 28-pixel image
  several dB (docs/quality-gate.md), so intact rotated samples would fail a 30 dB bar for being rotated.
  The geometric ops come first in the fixed op order, so the aligned source is exactly the image
  the photometric ops started from, and the scores measure what those ops did to it.
  `in_frame` is the share of the frame that still shows the source.
- **mix**: PSNR and SSIM against each parent, weighted by λ and 1 - λ (recorded; by default no
  threshold applies to them: a mixed sample is judged by label consistency and the outlier filter).
- **generative**: no source; judged by label consistency and the outlier filter.
- **every branch**: `label_prob` (augdag.scoring.label_prob), the probability the reference classifier
  here (a linear probe on the pretrained backbone's features, trained on the raw train split) gives the
  sample's label; and `outlier_z` (augdag.scoring.WindowZ), the sliding-window z of the branch's watched
  score (`quality.outlier.score`).
"""

from __future__ import annotations

import numpy as np
import torch

from augdag import imquality, ops

GEOMETRIC = ops.GEOMETRIC
PHOTOMETRIC = frozenset(ops.OPS) - GEOMETRIC


def aligned_source(source: np.ndarray, applied: list[dict], composed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(the source warped by the recorded geometric ops only, HxW bool mask of pixels that lie
    wholly inside the source's frame). composed: the ops as the one warp the stage applied (augdag.ops)."""
    geo = [p for p in applied if p["op"] in GEOMETRIC]
    h, w = source.shape[:2]
    if not geo:
        return source, np.ones((h, w), bool)
    if composed:
        m = ops.geometry_matrix(geo, h, w)
        return ops.warp_u8(source, m), ops.frame_mask(m, h, w)
    t, m = ops.to_tensor(source), torch.ones(1, h, w)
    for p in geo:
        t = ops.OPS[p["op"]].apply(t, p)
        m = ops.OPS[p["op"]].apply(m, p)
    return ops.to_uint8(t), (m[0] >= 1.0 - 1e-4).numpy()


def aligned_sources(sources: np.ndarray, applied: list[list[dict]],
                    composed: list[bool] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """aligned_source for N sources of one shape at once: (N x H x W x C uint8, N x H x W bool), the same bytes.

    composed[i]: row i's geometry was one warp (its record says so); those are warped one by one (OpenCV). The
    others, grouped by the geometric ops they drew, go through each op's batched kernel together, with a plane
    of ones as an extra channel that becomes the mask (every geometric op treats the channels alike)."""
    n, h, w, c = sources.shape
    out, mask = np.array(sources, dtype=np.uint8, copy=True), np.ones((n, h, w), bool)
    groups: dict[tuple, list[tuple[int, list[dict]]]] = {}
    for i, a in enumerate(applied):
        geo = [p for p in a if p["op"] in GEOMETRIC]
        if geo and composed is not None and composed[i]:
            m = ops.geometry_matrix(geo, h, w)
            out[i], mask[i] = ops.warp_u8(sources[i], m), ops.frame_mask(m, h, w)
        elif geo:
            groups.setdefault(tuple(p["op"] for p in geo), []).append((i, geo))
    step = max(1, ops.BATCH_VALUES // (h * w * (c + 1)))
    for names, members in groups.items():
        for start in range(0, len(members), step):
            part = members[start:start + step]
            idx = [i for i, _ in part]
            t = torch.cat([ops._to_planes(sources[idx]), torch.ones(len(idx), 1, h, w)], dim=1)
            for k, name in enumerate(names):
                op, ps = ops.OPS[name], [geo[k] for _, geo in part]
                batch_fn = getattr(op, "apply_batch", None)
                t = batch_fn(t, ps) if batch_fn is not None else torch.stack([op.apply(x, p) for x, p in zip(t, ps)])
            out[idx] = ops._to_pixels(t[:, :c])
            mask[idx] = (t[:, c] >= 1.0 - 1e-4).numpy()
    return out, mask


def traditional_scores(sources: np.ndarray, samples: np.ndarray, applied: list[list[dict]],
                       composed: list[bool] | None = None) -> dict[str, np.ndarray]:
    """psnr, ssim (masked, against the aligned source) and in_frame for N traditional samples (composed: as in
    aligned_sources)."""
    if len(samples) == 0:
        return {k: np.zeros(0) for k in ("psnr", "ssim", "in_frame")}
    ref, mask = aligned_sources(np.asarray(sources), applied, composed)
    return {"psnr": imquality.psnr_batch(samples, ref, mask), "ssim": imquality.ssim_batch(samples, ref, mask),
            "in_frame": mask.reshape(len(mask), -1).mean(1)}


def mix_scores(parent_a: np.ndarray, parent_b: np.ndarray, samples: np.ndarray,
               lam: np.ndarray) -> dict[str, np.ndarray]:
    """psnr and ssim against each parent, weighted by λ (parent a) and 1 - λ (parent b)."""
    if len(samples) == 0:
        return {k: np.zeros(0) for k in ("psnr", "ssim")}
    lam = np.asarray(lam, np.float64)
    out = {}
    for name, fn in (("psnr", imquality.psnr_batch), ("ssim", imquality.ssim_batch)):
        out[name] = lam * fn(samples, parent_a) + (1.0 - lam) * fn(samples, parent_b)
    return out


_EMBEDDERS: dict = {}  # (image_size, depth, device) -> Embedder: one backbone per process, whatever it scores


def _embedder(image_size: int, depth: int | None, device: str):
    from augdag.features import Embedder

    key = (image_size, depth, device)
    hit = _EMBEDDERS.get(key)
    if hit is None:
        _EMBEDDERS.clear()
        hit = _EMBEDDERS[key] = Embedder(image_size=image_size, depth=depth, device=device)
    return hit


class ReferenceClassifier:
    """A linear probe on the pretrained backbone's features (features.Embedder: `image_size`, `depth`), trained
    on the raw train split.

    It pickles without the backbone (a few KB: the probe and the settings), so a Dask worker that scores a shard
    gets it cheaply and builds the backbone once per process."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, n_classes: int, image_size: int = 32,
                 depth: int | None = 6, device="cpu"):
        from augdag.features import LinearProbe

        self.n_classes, self.image_size, self.depth, self.device = n_classes, image_size, depth, str(device)
        self.probe = LinearProbe(n_classes).fit(self.embed(images), labels)

    def embed(self, images: np.ndarray) -> np.ndarray:
        return _embedder(self.image_size, self.depth, self.device)(images)

    def proba(self, images: np.ndarray) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, self.n_classes))
        return self.probe.predict_proba(self.embed(images))
