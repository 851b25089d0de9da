"""Traditional augmentation ops, with drawing kept apart from applying (torchvision v2's split).

`make_params(rng, h, w)` draws an op's parameters from the sample's own generator and returns a
plain JSON-able dict; `apply(img, params)` is a pure function of the image and those params. The
manifest records the params, so any sample can be replayed, and its params re-drawn from its seed
and compared. Each op draws from its own sub-generator, so changing one op's settings leaves the
draws of the others unchanged.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from augdag.params import OpsParams
from augdag.seeding import rng as make_rng

BILINEAR = InterpolationMode.BILINEAR


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWxC uint8 -> CxHxW float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255.0)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """CxHxW float in [0, 1] -> HxWxC uint8 (round half to even, clipped)."""
    return t.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _box(rng, h, w, scale, ratio, attempts=10):
    """An area fraction in `scale` with aspect ratio in `ratio` (log-uniform); None if none fits."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target = area * _u(rng, *scale)
        ar = math.exp(_u(rng, *log_ratio))
        bw = int(round(math.sqrt(target * ar)))
        bh = int(round(math.sqrt(target / ar)))
        if 0 < bw <= w and 0 < bh <= h:
            top = int(rng.integers(0, h - bh + 1))
            left = int(rng.integers(0, w - bw + 1))
            return {"top": top, "left": left, "height": bh, "width": bw}
    return None


class HFlip:
    def make_params(self, cfg, rng, h, w):
        return {}

    def apply(self, img, p):
        return F.horizontal_flip(img)


class VFlip(HFlip):
    def apply(self, img, p):
        return F.vertical_flip(img)


class Rotation:
    def make_params(self, cfg, rng, h, w):
        return {"angle": _u(rng, -cfg.degrees, cfg.degrees)}

    def apply(self, img, p):
        return F.rotate(img, p["angle"], interpolation=BILINEAR, fill=0.0)


class ResizedCrop:
    def make_params(self, cfg, rng, h, w):
        box = _box(rng, h, w, cfg.scale, cfg.ratio)
        if box is None:  # fall back to the largest centred box with an allowed ratio
            side = min(h, w)
            box = {"top": (h - side) // 2, "left": (w - side) // 2, "height": side, "width": side}
        return box

    def apply(self, img, p):
        size = list(img.shape[-2:])
        return F.resized_crop(img, p["top"], p["left"], p["height"], p["width"], size,
                              interpolation=BILINEAR, antialias=True)


class Affine:
    def make_params(self, cfg, rng, h, w):
        return {
            "tx": int(round(_u(rng, -cfg.translate, cfg.translate) * w)),
            "ty": int(round(_u(rng, -cfg.translate, cfg.translate) * h)),
            "scale": _u(rng, *cfg.scale),
        }

    def apply(self, img, p):
        return F.affine(img, angle=0.0, translate=[p["tx"], p["ty"]], scale=p["scale"], shear=[0.0, 0.0],
                        interpolation=BILINEAR, fill=0.0)


class ColorJitter:
    def make_params(self, cfg, rng, h, w):
        def factor(x):
            return _u(rng, max(0.0, 1.0 - x), 1.0 + x)

        return {"brightness": factor(cfg.brightness), "contrast": factor(cfg.contrast),
                "saturation": factor(cfg.saturation)}

    def apply(self, img, p):
        img = F.adjust_brightness(img, p["brightness"])
        img = F.adjust_contrast(img, p["contrast"])
        if img.shape[0] == 3:
            img = F.adjust_saturation(img, p["saturation"])
        return img


class GaussianBlur:
    def make_params(self, cfg, rng, h, w):
        return {"kernel_size": cfg.kernel_size, "sigma": _u(rng, *cfg.sigma)}

    def apply(self, img, p):
        k = p["kernel_size"]
        return F.gaussian_blur(img, [k, k], [p["sigma"], p["sigma"]])


class GaussianNoise:
    def make_params(self, cfg, rng, h, w):
        return {"std": _u(rng, *cfg.std), "noise_seed": int(rng.integers(0, 2**63 - 1))}

    def apply(self, img, p):
        g = np.random.Generator(np.random.PCG64(p["noise_seed"]))
        noise = torch.from_numpy(g.standard_normal(tuple(img.shape), dtype=np.float32))
        return (img + noise * p["std"]).clamp(0.0, 1.0)


class RandomErasing:
    def make_params(self, cfg, rng, h, w):
        box = _box(rng, h, w, cfg.scale, cfg.ratio)
        return {**(box or {"top": 0, "left": 0, "height": 0, "width": 0}), "value": cfg.value}

    def apply(self, img, p):
        if p["height"] == 0 or p["width"] == 0:
            return img
        return F.erase(img, p["top"], p["left"], p["height"], p["width"], torch.tensor(p["value"]))


OPS = {
    "hflip": HFlip(),
    "vflip": VFlip(),
    "rotation": Rotation(),
    "resized_crop": ResizedCrop(),
    "affine": Affine(),
    "color_jitter": ColorJitter(),
    "gaussian_blur": GaussianBlur(),
    "gaussian_noise": GaussianNoise(),
    "random_erasing": RandomErasing(),
}
assert list(OPS) == list(OpsParams.model_fields), "OPS and OpsParams must list the same ops in order"


def make_params(ops: OpsParams, sample_seed: int, h: int, w: int) -> list[dict]:
    """The ops applied to one sample, in order, each with its drawn params."""
    applied = []
    for name, op in OPS.items():
        cfg = getattr(ops, name)
        g = make_rng(sample_seed, "op", name)
        if cfg.p > 0 and g.random() < cfg.p:
            applied.append({"op": name, **op.make_params(cfg, g, h, w)})
    return applied


def apply(image: np.ndarray, applied: list[dict]) -> np.ndarray:
    """Apply recorded op params to one HxWxC uint8 image; pure and deterministic."""
    t = to_tensor(image)
    for p in applied:
        if p["op"] not in OPS:
            raise ValueError(f"unknown op {p['op']!r}; known ops: {', '.join(OPS)}")
        t = OPS[p["op"]].apply(t, p)
    return to_uint8(t)
