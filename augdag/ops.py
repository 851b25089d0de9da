"""Traditional augmentation ops, with drawing kept apart from applying (torchvision v2's split).

`make_params(rng, h, w)` draws an op's parameters from the sample's own generator and returns a
plain JSON-able dict; `apply(img, params)` is a pure function of the image and those params. The
manifest records the params, so any sample can be replayed, and its params re-drawn from its seed
and compared. Each op draws from its own sub-generator, so changing one op's settings leaves the
draws of the others unchanged.

Geometry is resampled once per sample: the geometric ops a sample drew (flips, rotation, crop, affine) are
composed into one affine map and applied with OpenCV's uint8 bilinear warp (what Albumentations uses), then the
photometric ops run on the result. Records made that way say so (`"geometry": "composed"` beside the ops in
the manifest's op_params) and replay the same way; a record without it (made before 2026-12-07) replays
through the per-op kernels below, one resampling per op, which the stage used before.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F
from torchvision.transforms.v2.functional import _geometry as _tvg

from augdag import jit
from augdag.params import OpsParams
from augdag.seeding import derive_seeds, generators
from augdag.seeding import rng as make_rng

BILINEAR = InterpolationMode.BILINEAR


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWxC uint8 -> CxHxW float32 in [0, 1]."""
    a = np.ascontiguousarray(image)
    if not a.flags.writeable:  # a memory-mapped shard: torch warns on read-only arrays (it copies just below anyway)
        a = a.copy()
    return torch.from_numpy(a).permute(2, 0, 1).float().div(255.0)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """CxHxW float in [0, 1] -> HxWxC uint8 (round half to even, clipped)."""
    return t.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


# --- compiled kernels (augdag.jit) for the batch's conversions and the colour jitter ------------------------------
# torch ran these as a dozen whole-batch passes each, where a kernel touches each value once or twice (figures:
# bench/RESULTS.md, "Performance benchmarks"). The conversions give torch's bytes exactly (x / 255 and
# round(clamp(x, 0, 1) * 255), both single IEEE float32 operations; tests/test_ops.py checks every uint8 value).


@jit.specialised
def _to_planes_kernel(c: int):
    """N x H x W x c uint8 -> N x c x H x W float32 in [0, 1], as to_tensor."""

    @jit.njit
    def to_planes(x, out):  # pragma: no cover (compiled)
        n, hw = x.shape[0], x.shape[1] * x.shape[2]
        k = np.float32(255.0)
        for i in range(n):
            src = x[i].ravel()
            dst = out[i].ravel()
            for ch in range(c):
                for j in range(hw):
                    dst[ch * hw + j] = np.float32(src[j * c + ch]) / k

    return to_planes


@jit.specialised
def _to_pixels_kernel(c: int):
    """N x c x H x W float32 -> N x H x W x c uint8, as to_uint8 (clip to [0, 1], x 255, round half to even)."""

    @jit.njit
    def to_pixels(t, out):  # pragma: no cover (compiled)
        n, hw = t.shape[0], t.shape[2] * t.shape[3]
        zero, one, k = np.float32(0.0), np.float32(1.0), np.float32(255.0)
        for i in range(n):
            src = t[i].ravel()
            dst = out[i].ravel()
            for ch in range(c):
                for j in range(hw):
                    dst[j * c + ch] = np.uint8(np.rint(min(max(src[ch * hw + j], zero), one) * k))

    return to_pixels


@jit.specialised
def _jitter_kernel(c: int):
    """Brightness, contrast, saturation (torchvision's formulas, in that order) of N x c x H x W float32 images."""

    @jit.njit
    def jitter(t, factors, out):  # pragma: no cover (compiled)
        n, hw = t.shape[0], t.shape[2] * t.shape[3]
        zero, one = np.float32(0.0), np.float32(1.0)
        wr, wg, wb = np.float32(0.2989), np.float32(0.587), np.float32(0.114)  # torchvision's grey weights
        for i in range(n):
            src = t[i].ravel()
            dst = out[i].ravel()
            rb, rc, rs = np.float32(factors[i, 0]), np.float32(factors[i, 1]), np.float32(factors[i, 2])
            # 1 - r in float64, as torchvision
            ac, as_ = np.float32(1.0 - factors[i, 1]), np.float32(1.0 - factors[i, 2])
            for j in range(c * hw):  # brightness: blend with black
                dst[j] = min(max(src[j] * rb, zero), one)
            # contrast's mean grey (one channel: the image's mean), in float64, four running sums in a fixed order
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            s3 = 0.0
            g1, g2 = (hw, 2 * hw) if c == 3 else (0, 0)
            whole = hw - hw % 4
            for j in range(0, whole, 4):
                s0 += (dst[j] * wr + dst[g1 + j] * wg) + dst[g2 + j] * wb if c == 3 else dst[j]
                s1 += (dst[j + 1] * wr + dst[g1 + j + 1] * wg) + dst[g2 + j + 1] * wb if c == 3 else dst[j + 1]
                s2 += (dst[j + 2] * wr + dst[g1 + j + 2] * wg) + dst[g2 + j + 2] * wb if c == 3 else dst[j + 2]
                s3 += (dst[j + 3] * wr + dst[g1 + j + 3] * wg) + dst[g2 + j + 3] * wb if c == 3 else dst[j + 3]
            for j in range(whole, hw):
                s0 += (dst[j] * wr + dst[g1 + j] * wg) + dst[g2 + j] * wb if c == 3 else dst[j]
            # contrast: blend with the mean grey; saturation (three channels): with each pixel's grey
            mean = np.float32(((s0 + s1) + (s2 + s3)) / hw) * ac
            for j in range(hw):
                if c == 3:
                    r = min(max(dst[j] * rc + mean, zero), one)
                    g = min(max(dst[hw + j] * rc + mean, zero), one)
                    b = min(max(dst[2 * hw + j] * rc + mean, zero), one)
                    grey = ((r * wr + g * wg) + b * wb) * as_
                    dst[j] = min(max(r * rs + grey, zero), one)
                    dst[hw + j] = min(max(g * rs + grey, zero), one)
                    dst[2 * hw + j] = min(max(b * rs + grey, zero), one)
                else:
                    dst[j] = min(max(dst[j] * rc + mean, zero), one)

    return jitter


@jit.specialised
def _jitter_u8_kernel(c: int):
    """The colour jitter alone, in place on N x H x W x c uint8 images (those at `idx`): _jitter_kernel's float32
    arithmetic between _to_planes and _to_pixels, value for value, without their whole-batch copies: brightness is a
    256-entry table of the uint8 value; the mean grey is summed as _jitter_kernel sums it; one channel's contrast is
    then a table too, three channels' contrast and saturation run over one image's float planes at a time."""

    @jit.njit
    def jitter_u8(images, idx, factors):  # pragma: no cover (compiled)
        hw = images.shape[1] * images.shape[2]
        zero, one, k = np.float32(0.0), np.float32(1.0), np.float32(255.0)
        wr, wg, wb = np.float32(0.2989), np.float32(0.587), np.float32(0.114)
        lb = np.empty(256, np.float32)
        lu = np.empty(256, np.uint8)
        # three channels: the image as float planes, so the per-pixel passes vectorise (gathers do not)
        buf = np.empty(3 * hw if c == 3 else 0, np.float32)
        for m in range(idx.shape[0]):
            px = images[idx[m]].ravel()
            rb, rc, rs = np.float32(factors[m, 0]), np.float32(factors[m, 1]), np.float32(factors[m, 2])
            ac, as_ = np.float32(1.0 - factors[m, 1]), np.float32(1.0 - factors[m, 2])
            for u in range(256):
                lb[u] = min(max(np.float32(u) / k * rb, zero), one)
            if c == 3:
                for j in range(hw):
                    buf[j] = lb[px[3 * j]]
                    buf[hw + j] = lb[px[3 * j + 1]]
                    buf[2 * hw + j] = lb[px[3 * j + 2]]
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            s3 = 0.0
            whole = hw - hw % 4
            for j in range(0, whole, 4):
                if c == 3:
                    s0 += (buf[j] * wr + buf[hw + j] * wg) + buf[2 * hw + j] * wb
                    s1 += (buf[j + 1] * wr + buf[hw + j + 1] * wg) + buf[2 * hw + j + 1] * wb
                    s2 += (buf[j + 2] * wr + buf[hw + j + 2] * wg) + buf[2 * hw + j + 2] * wb
                    s3 += (buf[j + 3] * wr + buf[hw + j + 3] * wg) + buf[2 * hw + j + 3] * wb
                else:
                    s0 += lb[px[j]]
                    s1 += lb[px[j + 1]]
                    s2 += lb[px[j + 2]]
                    s3 += lb[px[j + 3]]
            for j in range(whole, hw):
                s0 += (buf[j] * wr + buf[hw + j] * wg) + buf[2 * hw + j] * wb if c == 3 else lb[px[j]]
            mean = np.float32(((s0 + s1) + (s2 + s3)) / hw) * ac
            if c == 3:
                for j in range(hw):
                    r = min(max(buf[j] * rc + mean, zero), one)
                    g = min(max(buf[hw + j] * rc + mean, zero), one)
                    b = min(max(buf[2 * hw + j] * rc + mean, zero), one)
                    grey = ((r * wr + g * wg) + b * wb) * as_
                    buf[j] = np.rint(min(max(r * rs + grey, zero), one) * k)
                    buf[hw + j] = np.rint(min(max(g * rs + grey, zero), one) * k)
                    buf[2 * hw + j] = np.rint(min(max(b * rs + grey, zero), one) * k)
                for j in range(hw):
                    px[3 * j] = np.uint8(buf[j])
                    px[3 * j + 1] = np.uint8(buf[hw + j])
                    px[3 * j + 2] = np.uint8(buf[2 * hw + j])
            else:
                for u in range(256):
                    lu[u] = np.uint8(np.rint(min(max(lb[u] * rc + mean, zero), one) * k))
                for j in range(hw):
                    px[j] = lu[px[j]]

    return jitter_u8


def _to_planes(images: np.ndarray) -> torch.Tensor:
    """N x H x W x C uint8 -> N x C x H x W float32 tensor in [0, 1] (to_tensor's bytes)."""
    x = np.ascontiguousarray(images)
    out = np.empty((x.shape[0], x.shape[3], x.shape[1], x.shape[2]), np.float32)
    _to_planes_kernel(x.shape[3])(x, out)
    return torch.from_numpy(out)


def _float32_array(t: torch.Tensor) -> np.ndarray:
    """A kernel's input: the tensor's values as a C-contiguous float32 array (a view where they already are)."""
    return t.detach().to(torch.float32).contiguous().numpy()


def _to_pixels(t: torch.Tensor) -> np.ndarray:
    """N x C x H x W float tensor -> N x H x W x C uint8 (to_uint8's bytes)."""
    x = _float32_array(t)
    out = np.empty((x.shape[0], x.shape[2], x.shape[3], x.shape[1]), np.uint8)
    _to_pixels_kernel(x.shape[1])(x, out)
    return out


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


_CENTRES: dict = {}  # (h, w) -> (x, y) float32 pixel-centre coordinates (origin at the centre), shared read-only


def _centres(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    hit = _CENTRES.get((h, w))
    if hit is None:
        if len(_CENTRES) >= 16:
            _CENTRES.clear()
        # torchvision's _affine_grid base: torch.linspace's float32 values
        x = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, dtype=torch.float32).expand(h, w).contiguous()
        y = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, dtype=torch.float32).unsqueeze(-1).expand(h, w)
        hit = _CENTRES[(h, w)] = (x.numpy(), y.contiguous().numpy())
    return hit


def _fma32(a, b, c):  # pragma: no cover (compiled into _grid_kernel)
    """a * b + c rounded once to float32, as a fused multiply-add (the float32 product is exact in float64)."""
    return np.float32(np.float64(a) * np.float64(b) + np.float64(c))


@jit.specialised
def _grid_kernel():
    """Each image's sampling grid (N x H x W x 2, grid_sample's normalised coordinates) and its fill mask
    (N x H x W: what grid_sample gives a plane of ones, the sum of the weights of the taps inside the frame)."""
    fma32 = jit.njit(_fma32)

    @jit.njit
    def grid_and_mask(mats, xs, ys, grid, mask):  # pragma: no cover (compiled)
        n = mats.shape[0]
        h, w = xs.shape
        hx, hy = np.float32(0.5 * w), np.float32(0.5 * h)
        one, half, zero = np.float32(1.0), np.float32(-0.5), np.float32(0.0)
        x_c = xs.ravel()
        y_c = ys.ravel()
        for i in range(n):
            a, b, c = mats[i, 0], mats[i, 1], mats[i, 2]
            d, e, f = mats[i, 3], mats[i, 4], mats[i, 5]
            g = grid[i].ravel()
            m = mask[i].ravel()
            for k in range(h * w):
                # the grid as _warp's docstring says: each product and sum rounded to float32 in that order
                gx = ((x_c[k] * a) + (y_c[k] * b) + c) / hx
                gy = ((x_c[k] * d) + (y_c[k] * e) + f) / hy
                g[2 * k] = gx
                g[2 * k + 1] = gy
                # grid_sample's pixel coordinates ((g + 1) * size / 2 - 0.5, fused as its AVX2/AVX-512 kernels
                # compile it) and bilinear weights; taps outside the frame weigh 0
                ix = fma32(gx + one, hx, half)
                iy = fma32(gy + one, hy, half)
                x0, y0 = np.floor(ix), np.floor(iy)
                east, south = ix - x0, iy - y0
                west, north = one - east, one - south
                in_x0, in_x1 = (x0 > -1) & (x0 < w), (x0 + 1 > -1) & (x0 + 1 < w)
                in_y0, in_y1 = (y0 > -1) & (y0 < h), (y0 + 1 > -1) & (y0 + 1 < h)
                nw = north * west if in_x0 & in_y0 else zero
                ne = north * east if in_x1 & in_y0 else zero
                sw = south * west if in_x0 & in_y1 else zero
                se = south * east if in_x1 & in_y1 else zero
                m[k] = ((nw + ne) + sw) + se

    return grid_and_mask


def _warp(t: torch.Tensor, matrices: list[list[float]]) -> torch.Tensor:
    """Bilinear warp of each image in N x C x H x W by its own inverse affine matrix (fill 0, same size).

    torchvision's rotate/affine kernel, with the sampling grid formed elementwise: for output pixel centre (x, y)
    (origin at the image centre, as torchvision's _affine_grid), source = ((a x + b y) + c) / (W/2) and
    ((d x + e y) + f) / (H/2), each product and sum rounded to float32 in that order. torchvision forms the same
    grid with a matrix product (MKL's sgemm here), whose rounding depends on the BLAS build and the CPU it picks a
    kernel for; this grid is the same for one image or a batch, on any machine. The fill is torchvision's too: the
    resampled image is multiplied by what a plane of ones resamples to, so pixels that draw partly from outside
    fade to 0. A compiled kernel (_grid_kernel) forms the grid and that mask in one pass, where torch took three
    (a large share of the warp's time); grid_sample resamples the image.
    """
    n, _, h, w = t.shape
    xs, ys = _centres(h, w)
    grid = np.empty((n, h, w, 2), np.float32)
    mask = np.empty((n, 1, h, w), np.float32)
    _grid_kernel()(np.asarray(matrices, dtype=np.float32).reshape(n, 6), xs, ys, grid, mask)
    out = torch.nn.functional.grid_sample(t.to(torch.float32), torch.from_numpy(grid), mode="bilinear",
                                          padding_mode="zeros", align_corners=False)
    return out.mul_(torch.from_numpy(mask))


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


class _Batched:
    """An op whose apply() is its apply_batch() on one image, so replay and the stage share one kernel."""

    def apply(self, img, p):
        return self.apply_batch(img[None], [p])[0]


class Rotation(_Batched):
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


class Affine(_Batched):
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


class ColorJitter(_Batched):
    FACTORS = ("brightness", "contrast", "saturation")

    def make_params(self, cfg, rng, h, w):
        def factor(x):
            return _u(rng, max(0.0, 1.0 - x), 1.0 + x)

        return {"brightness": factor(cfg.brightness), "contrast": factor(cfg.contrast),
                "saturation": factor(cfg.saturation)}

    def apply_batch(self, t, ps):
        """torchvision's adjust_brightness, adjust_contrast and (three channels) adjust_saturation, in that order,
        as one compiled pass: each blend is x * r + other * (1 - r), clipped to [0, 1]; contrast blends with the
        image's mean grey (the mean in float64), saturation with each pixel's grey (0.2989 R + 0.587 G + 0.114 B).
        torchvision forms the blend with a fused multiply-add where it vectorises and the mean with its own
        summation order: the bytes differ from its by at most 1 level, on a few values in 10,000 (tested)."""
        x = _float32_array(t)
        out = np.empty_like(x)
        _jitter_kernel(self._channels(t.shape[1]))(x, self.factors(ps), out)
        return torch.from_numpy(out)

    def apply_u8(self, images: np.ndarray, idx: list[int], ps: list[dict]) -> None:
        """images[idx] jittered in place (N x H x W x C uint8, C-contiguous): the bytes of apply_batch between the
        float conversions, without them (the whole op at 224x224x3 was mostly those copies)."""
        if images.dtype != np.uint8 or not images.flags.c_contiguous:  # the kernel writes through a flat view
            raise ValueError(f"color_jitter in place takes C-contiguous uint8 images, not {images.dtype}")
        _jitter_u8_kernel(self._channels(images.shape[3]))(images, np.asarray(idx, np.int64), self.factors(ps))

    @staticmethod
    def _channels(c: int) -> int:
        if c not in (1, 3):
            raise ValueError(f"color_jitter takes images of 1 or 3 channels, not {c}")
        return c

    def factors(self, ps: list[dict]) -> np.ndarray:
        factors = np.array([[p[k] for k in self.FACTORS] for p in ps], dtype=np.float64).reshape(len(ps), 3)
        bad = ~(np.isfinite(factors) & (factors >= 0))
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise ValueError(f"color_jitter: {self.FACTORS[j]} factor {factors[i, j]!r} is not a non-negative number")
        return factors


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
GEOMETRIC = frozenset({"hflip", "vflip", "rotation", "resized_crop", "affine"})
COMPOSED = "composed"  # op_params["geometry"] of a sample whose geometric ops were applied as one warp


def _compose(m: tuple, o: tuple) -> tuple:
    """m @ o for affine maps given as their top two rows (a, b, c, d, e, f), in plain float64 arithmetic in the
    written order (no BLAS: the same bits on every CPU)."""
    a, b, c, d, e, f = m
    p, q, r, s, t, u = o
    return (a * p + b * s, a * q + b * t, (a * r + b * u) + c, d * p + e * s, d * q + e * t, (d * r + e * u) + f)


def _op_inverse(p: dict, h: int, w: int) -> tuple:
    """The map from an op's output pixel to its input pixel, origin at the image centre (torchvision's
    convention for rotate and affine), as the top two rows of its 3x3 matrix."""
    op = p["op"]
    if op == "hflip":
        return (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    if op == "vflip":
        return (1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
    if op == "rotation":
        m = _tvg._get_inverse_affine_matrix([0.0, 0.0], -(p["angle"] % 360), [0.0, 0.0], 1.0, [0.0, 0.0])
    elif op == "affine":
        angle, translate, shear, _ = _tvg._affine_parse_args(0.0, [p["tx"], p["ty"]], p["scale"], [0.0, 0.0],
                                                             BILINEAR, None)
        m = _tvg._get_inverse_affine_matrix([0.0, 0.0], angle, [float(v) for v in translate], p["scale"], shear)
    elif op == "resized_crop":  # the box stretched to the frame: x_in = left + (x_out + 0.5) * width / w - 0.5
        sx, sy = p["width"] / w, p["height"] / h
        m = [sx, 0.0, p["left"] + (p["width"] - w) / 2.0, 0.0, sy, p["top"] + (p["height"] - h) / 2.0]
    else:
        raise ValueError(f"{op!r} is not a geometric op")
    return (float(m[0]), float(m[1]), float(m[2]), float(m[3]), float(m[4]), float(m[5]))


def geometry_matrix(applied: list[dict], h: int, w: int) -> np.ndarray | None:
    """The 2x3 map from output to source pixel (OpenCV's coordinates: pixel (0, 0)'s centre at the origin) of the
    record's geometric ops composed in order; None when it has none. Op k's output is op k+1's input, so the map
    from the last output back to the source is M_1 M_2 ... M_k."""
    geo = [p for p in applied if p["op"] in GEOMETRIC]
    if not geo:
        return None
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    m = (1.0, 0.0, cx, 0.0, 1.0, cy)  # centred -> OpenCV coordinates, on the source side
    for p in geo:
        m = _compose(m, _op_inverse(p, h, w))
    m = _compose(m, (1.0, 0.0, -cx, 0.0, 1.0, -cy))
    return np.array(m, dtype=np.float64).reshape(2, 3)


def _cv2():
    """OpenCV, with its own thread pool off: the stage spreads samples over its workers, and a parallel region per
    small image costs more than the warp."""
    import cv2

    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)
    return cv2


def warp_u8(image: np.ndarray, matrix: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """HxWxC uint8 through the 2x3 output->source map: OpenCV's bilinear uint8 warp, zero outside the frame
    (pixels that draw partly from outside fade to black, as torchvision's fill does); into `out` if given (a
    C-contiguous HxWxC uint8 array)."""
    h, w, c = image.shape
    if out is None:
        out = np.empty((h, w, c), np.uint8)
    a, b, x0, d, e, y0 = (float(v) for v in np.asarray(matrix).ravel())
    if b == 0.0 and d == 0.0 and a in (1.0, -1.0) and e in (1.0, -1.0) and x0 == (0.0 if a > 0 else w - 1.0) \
            and y0 == (0.0 if e > 0 else h - 1.0):  # flips only: the warp would copy pixels; so does slicing
        out[...] = image[::1 if e > 0 else -1, ::1 if a > 0 else -1]
        return out
    cv2 = _cv2()
    cv2.warpAffine(np.ascontiguousarray(image), matrix, (w, h), dst=out.reshape(h, w) if c == 1 else out,
                   flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out


def frame_mask(matrix: np.ndarray | None, h: int, w: int) -> np.ndarray:
    """HxW bool: the output pixels whose every bilinear tap lies inside the source's frame (a full plane warped
    by the same map stays full there)."""
    if matrix is None:
        return np.ones((h, w), bool)
    return warp_u8(np.full((h, w, 1), 255, np.uint8), matrix)[..., 0] == 255


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


def _check_ops(applied: list[dict]) -> None:
    for p in applied:
        if p["op"] not in OPS:
            raise ValueError(f"unknown op {p['op']!r}; known ops: {', '.join(OPS)}")


def apply(image: np.ndarray, applied: list[dict], composed: bool = False) -> np.ndarray:
    """Apply recorded op params to one HxWxC uint8 image; pure and deterministic.

    composed: the geometric ops as one warp (geometry_matrix, warp_u8), then the photometric ops (the stage's
    way since 2026-12-07); else every op in turn, each geometric one resampling the image."""
    _check_ops(applied)
    if composed:
        m = geometry_matrix(applied, *image.shape[:2])
        image = image if m is None else warp_u8(image, m)
        applied = [p for p in applied if p["op"] not in GEOMETRIC]
        if not applied:
            return np.array(image, dtype=np.uint8, copy=True)
    t = to_tensor(image)
    for p in applied:
        t = OPS[p["op"]].apply(t, p)
    return to_uint8(t)


_ORDER = {name: i for i, name in enumerate(OPS)}
BATCH_VALUES = 1 << 20  # float32 values per batch (4 MiB): all of a 28x28 chunk, 6 images at 224x224x3; cache-sized


def apply_batch(images: np.ndarray, applied: list[list[dict]], composed: bool = False) -> np.ndarray:
    """apply() over N images of one shape (NxHxWxC uint8), with the same bytes as apply() on each.

    composed: each image's geometric ops as one warp (OpenCV, per image), then the photometric ops in batches;
    `images` may then also be a sequence of HxWxC uint8 arrays of one shape (no stacked copy of the input).

    Images that drew the same ops form batches (of at most BATCH_VALUES floats); each op then runs over the whole
    batch in the order of `OPS`, which is the order make_params records: once where it has a batched kernel, else
    per image. A record that is not in that order or repeats an op (hand-written) goes through apply() alone.
    """
    if len(images) != len(applied):
        raise ValueError(f"{len(images)} images but {len(applied)} op records")
    if len(images) == 0:
        return np.asarray(images, dtype=np.uint8)
    for a in applied:
        _check_ops(a)
    if composed:  # each image warped straight into the output, then the photometric ops there, in batches
        shape = images[0].shape
        if any(img.shape != shape or img.dtype != np.uint8 for img in images):
            got = sorted({(img.shape, str(img.dtype)) for img in images})
            raise ValueError(f"apply_batch takes uint8 images of one shape; got {got}")
        h, w = shape[:2]
        out = np.empty((len(images), *shape), np.uint8)
        photometric = {}
        for i, a in enumerate(applied):
            m = geometry_matrix(a, h, w)
            if m is None:
                out[i] = images[i]
            else:
                warp_u8(images[i], m, out=out[i])
            ph = [p for p in a if p["op"] not in GEOMETRIC]
            if ph:
                photometric[i] = ph
        _apply_in_place(out, photometric)
        return out
    out = np.empty_like(images)
    out[...] = images
    _apply_in_place(out, dict(enumerate(applied)))
    return out


def _apply_in_place(out: np.ndarray, applied: dict[int, list[dict]]) -> None:
    """out[i] = apply(out[i], applied[i]) for each i in `applied` (per op, geometry included).

    Images that drew the same ops go through together, so every op runs on its whole batch: gathering and
    scattering the rows that drew an op cost as much as the colour jitter at 224x224x3. A record that is not in
    the order of OPS or repeats an op (hand-written) goes through apply() alone."""
    groups: dict[tuple, list[int]] = {}
    for i, a in applied.items():
        if not a:
            continue
        if [_ORDER[p["op"]] for p in a] != sorted({_ORDER[p["op"]] for p in a}):
            out[i] = apply(out[i], a)
        else:
            groups.setdefault(tuple(p["op"] for p in a), []).append(i)
    step = max(1, BATCH_VALUES // max(1, out[0].size)) if len(out) else 1
    for names, members in groups.items():
        members.sort()
        in_place = getattr(OPS[names[0]], "apply_u8", None) if len(names) == 1 else None
        if in_place is not None:  # an op alone with a uint8 kernel (the default ops' colour jitter): no float copies
            in_place(out, members, [applied[i][0] for i in members])
            continue
        for start in range(0, len(members), step):
            batched = members[start:start + step]
            t = _to_planes(out[batched])
            for k, name in enumerate(names):
                op, ps = OPS[name], [applied[i][k] for i in batched]
                batch_fn = getattr(op, "apply_batch", None)
                t = (batch_fn(t, ps) if batch_fn is not None
                     else torch.stack([op.apply(img, p) for img, p in zip(t, ps)]))
            out[batched] = _to_pixels(t)
