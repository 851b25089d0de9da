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
from torchvision.transforms.v2.functional import _color as _tvc
from torchvision.transforms.v2.functional import _geometry as _tvg

from augdag.params import OpsParams
from augdag.seeding import derive_seeds, generators
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


_PLANES: dict = {}  # (h, w, dtype) -> (x, y) pixel-centre coordinates and a plane of ones, shared read-only


def _planes(h: int, w: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    key = (h, w, dtype)
    hit = _PLANES.get(key)
    if hit is None:
        if len(_PLANES) >= 16:
            _PLANES.clear()
        x = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, dtype=dtype).expand(h, w).contiguous()
        y = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, dtype=dtype).unsqueeze(-1).expand(h, w).contiguous()
        hit = _PLANES[key] = (x, y, torch.ones(1, 1, h, w, dtype=dtype))
    return hit


def _warp(t: torch.Tensor, matrices: list[list[float]]) -> torch.Tensor:
    """Bilinear warp of each image in N x C x H x W by its own inverse affine matrix (fill 0, same size).

    torchvision's rotate/affine kernel, with the sampling grid formed elementwise: for output pixel centre (x, y)
    (origin at the image centre, as torchvision's _affine_grid), source = ((a x + b y) + c) / (W/2) and
    ((d x + e y) + f) / (H/2), each product and sum rounded to float32 in that order. torchvision forms the same
    grid with a matrix product (MKL's sgemm here), whose rounding depends on the BLAS build and the CPU it picks a
    kernel for, and which cost more than the resampling (1 ms of 4.5 ms an image at 224x224x3); this grid is the
    same for one image or a batch, on any machine. The fill is torchvision's too: a plane of ones is resampled
    with the image and the result multiplied by it, so pixels that draw partly from outside fade to 0.
    """
    n, _, h, w = t.shape
    xs, ys, ones = _planes(h, w, t.dtype)
    m = torch.tensor(matrices, dtype=t.dtype).reshape(n, 2, 3, 1, 1)
    scale = torch.tensor([0.5 * w, 0.5 * h], dtype=t.dtype).view(1, 2, 1, 1)
    grid = (xs * m[:, :, 0]).add_(ys * m[:, :, 1]).add_(m[:, :, 2]).div_(scale)  # n x 2 x H x W
    grid = grid.permute(0, 2, 3, 1)
    out = torch.nn.functional.grid_sample(t, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mask = torch.nn.functional.grid_sample(ones.expand(n, 1, h, w), grid, mode="bilinear", padding_mode="zeros",
                                           align_corners=False)
    return out.mul_(mask)


class HFlip:
    def make_params(self, cfg, rng, h, w):
        return {}

    def apply(self, img, p):
        return F.horizontal_flip(img)

    def apply_batch(self, t, ps):
        return t.flip(-1)


class VFlip(HFlip):
    def apply(self, img, p):
        return F.vertical_flip(img)

    def apply_batch(self, t, ps):
        return t.flip(-2)


class _Warped:
    """An op whose apply() is its apply_batch() on one image, so replay and the stage share one kernel."""

    def apply(self, img, p):
        return self.apply_batch(img[None], [p])[0]


class Rotation(_Warped):
    def make_params(self, cfg, rng, h, w):
        return {"angle": _u(rng, -cfg.degrees, cfg.degrees)}

    def apply_batch(self, t, ps):
        angles = [p["angle"] % 360 for p in ps]

        def matrix(a):
            return _tvg._get_inverse_affine_matrix([0.0, 0.0], -a, [0.0, 0.0], 1.0, [0.0, 0.0])

        turns = [i for i, a in enumerate(angles) if a % 90 == 0]  # exact quarter turns, as torchvision's rotate
        if not turns:
            return _warp(t, [matrix(a) for a in angles])
        out = torch.empty_like(t)
        warped = [i for i, a in enumerate(angles) if a % 90 != 0]
        if warped:
            out[warped] = _warp(t[warped], [matrix(angles[i]) for i in warped])
        for i in turns:
            out[i] = F.rotate(t[i], ps[i]["angle"], interpolation=BILINEAR, fill=0.0)
        return out


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


class Affine(_Warped):
    def make_params(self, cfg, rng, h, w):
        return {
            "tx": int(round(_u(rng, -cfg.translate, cfg.translate) * w)),
            "ty": int(round(_u(rng, -cfg.translate, cfg.translate) * h)),
            "scale": _u(rng, *cfg.scale),
        }

    def apply_batch(self, t, ps):
        matrices = []
        for p in ps:
            angle, translate, shear, _ = _tvg._affine_parse_args(0.0, [p["tx"], p["ty"]], p["scale"], [0.0, 0.0],
                                                                 BILINEAR, None)
            matrices.append(_tvg._get_inverse_affine_matrix([0.0, 0.0], angle, [float(v) for v in translate],
                                                            p["scale"], shear))
        return _warp(t, matrices)


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

    def apply_batch(self, t, ps):
        # torchvision's _blend is image1.mul(r).add_(image2, alpha=1 - r): addcmul_ with the factors as float32
        # tensors rounds the same way (tests/test_ops.py checks the bytes against apply()).
        def factors(key):
            r = [p[key] for p in ps]
            return (torch.tensor(r, dtype=t.dtype).view(-1, 1, 1, 1),
                    torch.tensor([1.0 - v for v in r], dtype=t.dtype).view(-1, 1, 1, 1))

        if any(p[k] < 0 for p in ps for k in ("brightness", "contrast", "saturation")):
            return None  # let apply() raise torchvision's error
        r, _ = factors("brightness")
        t = t.mul(r).clamp_(0.0, 1.0)
        gray = _tvc._rgb_to_grayscale_image(t, num_output_channels=1, preserve_dtype=False) if t.shape[1] == 3 else t
        r, a = factors("contrast")
        t = t.mul(r).addcmul_(torch.mean(gray, dim=(-3, -2, -1), keepdim=True), a).clamp_(0.0, 1.0)
        if t.shape[1] == 3:
            r, a = factors("saturation")
            gray = _tvc._rgb_to_grayscale_image(t, num_output_channels=1, preserve_dtype=False)
            t = t.mul(r).addcmul_(gray, a).clamp_(0.0, 1.0)
        return t


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
        if cfg.p <= 0:  # draws nothing: no generator (a third of a sample's cost at 28x28)
            continue
        g = make_rng(sample_seed, "op", name)
        if g.random() < cfg.p:
            applied.append({"op": name, **op.make_params(cfg, g, h, w)})
    return applied


def make_params_batch(ops: OpsParams, sample_seeds: list[int], h: int, w: int) -> list[list[dict]]:
    """`[make_params(ops, s, h, w) for s in sample_seeds]`, with the generators built in one vectorised pass."""
    on = [(name, op, getattr(ops, name)) for name, op in OPS.items() if getattr(ops, name).p > 0]
    per_op = [derive_seeds(sample_seeds, "op", name) for name, _, _ in on]  # one list per op, over the samples
    gens = generators([seed for seeds in zip(*per_op) for seed in seeds])  # sample-major, as before
    applied = []
    for i in range(len(sample_seeds)):
        a = []
        for (name, op, cfg), g in zip(on, gens[i * len(on):(i + 1) * len(on)]):
            if g.random() < cfg.p:
                a.append({"op": name, **op.make_params(cfg, g, h, w)})
        applied.append(a)
    return applied


def apply(image: np.ndarray, applied: list[dict]) -> np.ndarray:
    """Apply recorded op params to one HxWxC uint8 image; pure and deterministic."""
    t = to_tensor(image)
    for p in applied:
        if p["op"] not in OPS:
            raise ValueError(f"unknown op {p['op']!r}; known ops: {', '.join(OPS)}")
        t = OPS[p["op"]].apply(t, p)
    return to_uint8(t)


_ORDER = {name: i for i, name in enumerate(OPS)}
BATCH_VALUES = 1 << 20  # float32 values per batch (4 MiB): all of a 28x28 chunk, 6 images at 224x224x3; cache-sized


def apply_batch(images: np.ndarray, applied: list[list[dict]]) -> np.ndarray:
    """apply() over N images of one shape (NxHxWxC uint8), with the same bytes as apply() on each.

    Images that drew the same ops form batches (of at most BATCH_VALUES floats); each op then runs over the whole
    batch in the order of `OPS`, which is the order make_params records: once where it has a batched kernel, else
    per image. A record that is not in that order or repeats an op (hand-written) goes through apply() alone.
    """
    if len(images) != len(applied):
        raise ValueError(f"{len(images)} images but {len(applied)} op records")
    if len(images) == 0:
        return np.asarray(images, dtype=np.uint8)
    for a in applied:
        for p in a:
            if p["op"] not in OPS:
                raise ValueError(f"unknown op {p['op']!r}; known ops: {', '.join(OPS)}")
    out = np.empty_like(images)
    alone = [i for i, a in enumerate(applied) if [_ORDER[p["op"]] for p in a] != sorted({_ORDER[p["op"]] for p in a})]
    for i in alone:
        out[i] = apply(images[i], applied[i])
    # Images that drew the same ops go through together, so every op runs on its whole batch: gathering and
    # scattering the rows that drew an op cost as much as the colour jitter at 224x224x3.
    groups: dict[tuple, list[int]] = {}
    for i in sorted(set(range(len(images))) - set(alone)):
        groups.setdefault(tuple(p["op"] for p in applied[i]), []).append(i)
    step = max(1, BATCH_VALUES // max(1, images[0].size))
    for names, members in groups.items():
        for start in range(0, len(members), step):
            batched = members[start:start + step]
            t = torch.from_numpy(np.ascontiguousarray(images[batched])).permute(0, 3, 1, 2).float().div(255.0)
            for k, name in enumerate(names):
                op, ps = OPS[name], [applied[i][k] for i in batched]
                batch_fn = getattr(op, "apply_batch", None)
                result = batch_fn(t, ps) if batch_fn is not None else None
                t = result if result is not None else torch.stack([op.apply(img, p) for img, p in zip(t, ps)])
            out[batched] = t.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out
