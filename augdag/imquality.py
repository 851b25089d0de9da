"""Batched image-quality metrics of augmented images against their sources: PSNR and SSIM.

Both agree with scikit-image's per-image `peak_signal_noise_ratio` and `structural_similarity`
(tested within 1e-3; in practice ~1e-6 or better) but take whole batches, N x H x W x C, with an
optional validity mask (N x H x W bool, True = compare this pixel, all channels), e.g. to leave out
the fill that a rotation or a crop brings in.

SSIM replicates skimage's defaults exactly: a 7 x 7 uniform window, K1 = 0.01, K2 = 0.03, sample
covariance (factor NP / (NP - 1), NP = 49), per-channel maps averaged over the channels (skimage's
`channel_axis=-1`), and the map cropped by (7 - 1) // 2 = 3 pixels on every side before averaging.
skimage filters with `scipy.ndimage.uniform_filter` in mode 'reflect'; the padding only ever
reaches the 3-pixel border that is cropped away, so here the window sums are taken over the valid
region only and no padding is needed: the cropped map is identical.

Two code paths, chosen by dtype:

- uint8 inputs (the common case): one compiled pass per image (numba, specialised for the channel
  count; compiled on first use and cached on disk next to this module). The window sums of x, y,
  x^2 + y^2 and x*y are integers, so they are exact in int32 (the largest, 49 * 2 * 255^2, is far
  below 2^31): the pass keeps the 7-row column sums of each and moves them down one row at a time
  (add the row entering, subtract the row leaving), adds 7 neighbouring column sums across, and
  forms the covariance terms 49 * sum(xy) - sum(x) * sum(y), which cancel catastrophically in
  floating point, in int32 too. Only the final ratio is formed in float32 (relative error ~1e-7),
  and the map is summed in float64, in a fixed order. PSNR's sum of squared errors is exact
  (int64). Nothing depends on the thread count, and each image's numbers never meet another's.
- any other real dtype: float64 throughout, in torch, in chunks of at most `batch_size` images,
  further limited so that each intermediate array holds about `_CHUNK_ELEMENTS` values (a large
  image is split into its channel planes): memory stays bounded for any N and image size, and the
  buffers are reused from chunk to chunk.

The speed-up over a loop of skimage calls (bench/gate.py) comes from doing the per-call work once
per batch and, for uint8, from touching each pixel once in cache instead of in ~20 whole-image
passes of float64 filters.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from augdag import jit

__all__ = ["psnr_batch", "ssim_batch", "WIN_SIZE"]

WIN_SIZE = 7  # skimage's default for the uniform filter
_K1, _K2 = 0.01, 0.03
_NP = WIN_SIZE * WIN_SIZE
_PAD = (WIN_SIZE - 1) // 2
_CHUNK_ELEMENTS = 1 << 16  # pixels x channels per chunk (before the `batch_size` cap)


# ----------------------------------------------------------------------------------------------
# input checks


def _as_images(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"{name} must be a 4-D N x H x W x C array, got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"{name} must have an integer or real floating dtype, got {x.dtype}")
    return x


def _check(a, b, mask, data_range, batch_size):
    a = _as_images(a, "a")
    b = _as_images(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    if mask is not None:
        if isinstance(mask, torch.Tensor):
            mask = mask.detach().cpu().numpy()
        mask = np.asarray(mask)
        if mask.shape != a.shape[:3]:
            raise ValueError(
                f"mask must have shape N x H x W = {a.shape[:3]} (one flag per pixel, for all "
                f"channels), got {mask.shape}"
            )
        if mask.dtype != np.bool_:
            raise ValueError(f"mask must be a bool array (True = compare this pixel), got {mask.dtype}")
    try:
        data_range = float(data_range)
    except (TypeError, ValueError):
        raise ValueError(f"data_range must be a positive number, got {data_range!r}") from None
    if not (math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be a positive finite number, got {data_range!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return a, b, mask, data_range, int(batch_size)


def _chunk_len(shape, batch_size: int) -> int:
    per_image = max(1, shape[1] * shape[2] * shape[3])
    return max(1, min(batch_size, _CHUNK_ELEMENTS // per_image))


def _exact_uint8(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == np.uint8 and b.dtype == np.uint8


# ----------------------------------------------------------------------------------------------
# compiled uint8 kernels (augdag.jit: numba, compiled on first use, cached on disk)


@jit.specialised
def _sse_kernel(c: int):
    """Per-image sum of squared differences (int64, exact) of c-channel uint8 images, masked pixels only where
    use_mask."""

    @jit.njit
    def sse_u8(a, b, mask, use_mask, out):  # pragma: no cover (compiled)
        n, h, w = a.shape[0], a.shape[1], a.shape[2]
        for i in range(n):
            x = a[i].ravel()
            y = b[i].ravel()
            total = np.int64(0)
            if use_mask:
                keep = mask[i].ravel()
                for j in range(h * w):
                    m = np.int64(1) if keep[j] else np.int64(0)
                    for k in range(c):
                        d = np.int64(x[j * c + k]) - np.int64(y[j * c + k])
                        total += m * d * d
            else:
                for j in range(h * w * c):
                    d = np.int64(x[j]) - np.int64(y[j])
                    total += d * d
            out[i] = total

    return sse_u8


@jit.specialised
def _ssim_kernel(c: int):
    """SSIM of c-channel uint8 images in one pass per image (the channel count is a compile-time constant: the
    horizontal window steps by c, and a stride read at run time makes the pass much slower)."""

    @jit.njit
    def ssim_u8(a, b, mask, use_mask, k, out):  # pragma: no cover (compiled)
        """out[i] = the sum over image i's cropped map (masked pixels only, where use_mask) of S / 4.

        k = (c1/2, -c2/2, c1, -c2) as float32 (see _ssim_map_chunk for the algebra)."""
        n, h, w = a.shape[0], a.shape[1], a.shape[2]
        span = w * c  # values in one image row
        width = (w - 6) * c  # values in one row of the cropped map
        col_x = np.zeros(span, np.int32)
        col_y = np.zeros(span, np.int32)
        col_sq = np.zeros(span, np.int32)
        col_xy = np.zeros(span, np.int32)
        row = np.empty(width, np.float32)
        weight = np.empty(width, np.float32)
        k0, k1, k2, k3 = k[0], k[1], k[2], k[3]
        for i in range(n):
            x = a[i].ravel()
            y = b[i].ravel()
            for j in range(span):
                col_x[j] = 0
                col_y[j] = 0
                col_sq[j] = 0
                col_xy[j] = 0
            for r in range(7):
                o = r * span
                for j in range(span):
                    u = np.int32(x[o + j])
                    v = np.int32(y[o + j])
                    col_x[j] += u
                    col_y[j] += v
                    col_sq[j] += np.int32(u * u + v * v)
                    col_xy[j] += np.int32(u * v)
            total = 0.0
            for r0 in range(h - 6):
                if r0 > 0:  # the window moves down a row: row r0 + 6 enters, row r0 - 1 leaves
                    o_in = (r0 + 6) * span
                    o_out = (r0 - 1) * span
                    for j in range(span):
                        u = np.int32(x[o_in + j])
                        v = np.int32(y[o_in + j])
                        u0 = np.int32(x[o_out + j])
                        v0 = np.int32(y[o_out + j])
                        col_x[j] += np.int32(u - u0)
                        col_y[j] += np.int32(v - v0)
                        col_sq[j] += np.int32((u * u + v * v) - (u0 * u0 + v0 * v0))
                        col_xy[j] += np.int32(u * v - u0 * v0)
                for j in range(width):
                    # numba widens int32 arithmetic to int64; the np.int32 casts keep it (and the conversions to
                    # float32) in 32-bit lanes, which is what lets LLVM vectorise this loop. No value overflows.
                    sx = np.int32(col_x[j] + col_x[j + c] + col_x[j + 2 * c] + col_x[j + 3 * c] + col_x[j + 4 * c]
                                  + col_x[j + 5 * c] + col_x[j + 6 * c])
                    sy = np.int32(col_y[j] + col_y[j + c] + col_y[j + 2 * c] + col_y[j + 3 * c] + col_y[j + 4 * c]
                                  + col_y[j + 5 * c] + col_y[j + 6 * c])
                    ssq = np.int32(col_sq[j] + col_sq[j + c] + col_sq[j + 2 * c] + col_sq[j + 3 * c]
                                   + col_sq[j + 4 * c] + col_sq[j + 5 * c] + col_sq[j + 6 * c])
                    sxy = np.int32(col_xy[j] + col_xy[j + c] + col_xy[j + 2 * c] + col_xy[j + 3 * c]
                                   + col_xy[j + 4 * c] + col_xy[j + 5 * c] + col_xy[j + 6 * c])
                    p = np.int32(sx * sy)
                    q = np.int32(sx * sx + sy * sy)
                    d = np.int32(p - 49 * sxy)
                    v = np.int32(q - 49 * ssq)
                    row[j] = (((np.float32(p) + k0) * (np.float32(d) + k1))
                              / ((np.float32(q) + k2) * (np.float32(v) + k3)))
                if use_mask:
                    for j in range(w - 6):
                        m = np.float32(1.0) if mask[i, r0 + 3, j + 3] else np.float32(0.0)
                        for ch in range(c):
                            weight[j * c + ch] = m
                    for j in range(width):
                        row[j] *= weight[j]
                s0 = 0.0  # four running sums: the additions overlap, and the order is fixed
                s1 = 0.0
                s2 = 0.0
                s3 = 0.0
                j = 0
                while j + 4 <= width:
                    s0 += row[j]
                    s1 += row[j + 1]
                    s2 += row[j + 2]
                    s3 += row[j + 3]
                    j += 4
                while j < width:
                    s0 += row[j]
                    j += 1
                total += (s0 + s1) + (s2 + s3)
            out[i] = total

    return ssim_u8


def _u8_batches(a: np.ndarray, b: np.ndarray, mask, batch_size: int):
    """(start, a, b, mask) per batch of at most batch_size images, each C-contiguous (copied only if not)."""
    dummy = np.ones((1, 1, 1), np.bool_)
    for s in range(0, len(a), batch_size):
        e = min(len(a), s + batch_size)
        m = dummy if mask is None else np.ascontiguousarray(mask[s:e])
        yield s, np.ascontiguousarray(a[s:e]), np.ascontiguousarray(b[s:e]), m


# ----------------------------------------------------------------------------------------------
# PSNR


def psnr_batch(a, b, mask=None, data_range: float = 255.0, cap: float | None = 100.0,
               batch_size: int = 1024) -> np.ndarray:
    """Per-image PSNR in dB of `b` against `a`: float64 array of shape (N,).

    a, b: N x H x W x C arrays (uint8, other integer or float dtypes), equal shapes.
    mask: optional N x H x W bool; the MSE is taken over the masked pixels and all channels.
    data_range: the value range of the images (255 for uint8; pass 1.0 for floats in [0, 1]).
    cap: what identical images (MSE 0) score. skimage returns inf there; a finite cap keeps the
        values averageable, storable and plottable. `cap=None` returns inf like skimage. Only MSE 0
        is mapped to the cap: every finite value is skimage's, even above the cap (possible only
        with tiny float differences; uint8 images differ by at least 1 in one value, which gives
        at most 10 log10(255^2 * H * W * C), e.g. 99.9 dB for 224 x 224 x 3).
    An image whose mask is empty has no MSE: NaN.
    """
    a, b, mask, data_range, batch_size = _check(a, b, mask, data_range, batch_size)
    n, h, w, c = a.shape
    sse = np.empty(n, dtype=np.float64)
    count = np.full(n, float(h * w * c)) if mask is None else mask.sum(axis=(1, 2)) * float(c)
    if _exact_uint8(a, b) and n:  # integer arithmetic: the sum of squared errors is exact
        kernel, part = _sse_kernel(c), np.empty(n, np.int64)
        for s, x, y, m in _u8_batches(a, b, mask, batch_size):
            kernel(x, y, m, mask is not None, part[s:s + len(x)])
        sse[:] = part
    else:
        step = _chunk_len(a.shape, batch_size)
        for s in range(0, n, step):
            d = a[s:s + step].astype(np.float64) - b[s:s + step].astype(np.float64)
            sq = d * d
            if mask is not None:
                sq = np.where(mask[s:s + step, :, :, None], sq, 0.0)
            sse[s:s + step] = sq.sum(axis=(1, 2, 3), dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mse = sse / count
        out = 10.0 * np.log10(data_range ** 2 / mse)
    out[count == 0] = np.nan
    out[(mse == 0) & (count > 0)] = np.inf if cap is None else float(cap)
    return out


# ----------------------------------------------------------------------------------------------
# SSIM


def _ssim_chunks(shape, batch_size: int) -> tuple[int, int]:
    """(images, channels) per SSIM chunk: whole images while they fit the element budget, else one
    image at a time, split into channel planes (SSIM treats each channel on its own)."""
    _, h, w, c = shape
    if h * w * c <= _CHUNK_ELEMENTS:
        return _chunk_len(shape, batch_size), c
    return 1, max(1, min(c, _CHUNK_ELEMENTS // (h * w)))


def _planes(arr: np.ndarray) -> torch.Tensor:
    """n x H x W x C numpy slice -> n x C x H x W float64 tensor (a copy, in native byte order)."""
    return torch.from_numpy(arr.astype(np.float64)).permute(0, 3, 1, 2)


class _Workspace:
    """Buffers reused from chunk to chunk: a fresh multi-megabyte tensor for every elementwise op
    costs page faults, which make out-of-place adds much slower than adds into reused buffers."""

    def __init__(self):
        self._bufs: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        shape = tuple(int(d) for d in shape)
        buf = self._bufs.get(name)
        numel = math.prod(shape)
        if buf is None or buf.dtype != dtype or buf.numel() < numel:
            buf = self._bufs[name] = torch.empty(numel, dtype=dtype)
        return buf[:numel].view(shape)


def _box_valid(t: torch.Tensor, ws: _Workspace) -> torch.Tensor:
    """Sums over every 7 x 7 window lying wholly inside the last two dims (valid region only).

    Per axis: pairs, then quadruples, then 4 + 2 + 1: four additions instead of six.
    """
    for k, dim in enumerate((-2, -1)):
        L = t.shape[dim]
        shape = list(t.shape)
        shape[dim] = L - 1
        s2 = torch.add(t.narrow(dim, 0, L - 1), t.narrow(dim, 1, L - 1), out=ws.get(f"s2{k}", shape, t.dtype))
        shape[dim] = L - 3
        s4 = torch.add(s2.narrow(dim, 0, L - 3), s2.narrow(dim, 2, L - 3), out=ws.get(f"s4{k}", shape, t.dtype))
        shape[dim] = L - 6
        s7 = torch.add(s4.narrow(dim, 0, L - 6), s2.narrow(dim, 4, L - 6), out=ws.get(f"s7{k}", shape, t.dtype))
        s7 += t.narrow(dim, 6, L - 6)
        t = s7
    return t


def _ssim_map_chunk(x: torch.Tensor, y: torch.Tensor, data_range: float, ws: _Workspace) -> torch.Tensor:
    """x, y: n x C x H x W float64. A quarter of the cropped SSIM map, n x C x H-6 x W-6 (the
    factor 4 is applied to the means, saving a pass over the map).

    With sums over the window (sx = 49 ux, ...) skimage's
        S = (2 ux uy + C1)(2 vxy + C2) / ((ux^2 + uy^2 + C1)(vx + vy + C2)),
        vxy = NP/(NP-1) (uxy - ux uy), vx, vy alike,
    is, after multiplying numerator and denominator by NP^2 * NP (NP - 1),
        S = (2 P + c1)(2 (NP sxy - P) + c2) / ((Q + c1)(NP (sxx + syy) - Q + c2))
          = 4 (P + c1/2)(D - c2/2) / ((Q + c1)(V - c2)),
        P = sx sy, Q = sx^2 + sy^2, D = P - NP sxy, V = Q - NP (sxx + syy),
        c1 = C1 NP^2, c2 = C2 NP (NP - 1).
    The uint8 kernel (_ssim_kernel) forms the same four factors, with P, Q, D and V exact in int32
    (|.| <= 2 * 49^2 * 255^2 < 2^31), so the cancellation in D and V, which is where floating point
    loses digits, costs nothing; each factor is then rounded once to float32 (relative error 6e-8).
    """
    c1, c2 = _ssim_constants(data_range)
    dt = torch.float64
    maps = ws.get("maps", (4,) + tuple(x.shape), dt)
    xi, yi, sq, xy = maps.unbind(0)
    xi.copy_(x)
    yi.copy_(y)
    torch.mul(xi, xi, out=sq)
    sq.addcmul_(yi, yi)
    torch.mul(xi, yi, out=xy)
    sums = _box_valid(maps, ws)
    sx, sy, ssq, sxy = sums.unbind(0)
    pdqv = ws.get("pdqv", (4,) + tuple(sx.shape), dt)
    p, d, q, v = pdqv.unbind(0)
    torch.mul(sx, sy, out=p)
    torch.mul(sx, sx, out=q)
    q.addcmul_(sy, sy)
    torch.sub(p, sxy, alpha=_NP, out=d)
    torch.sub(q, ssq, alpha=_NP, out=v)
    consts = torch.tensor([c1 / 2, -c2 / 2, c1, -c2], dtype=dt)
    pdqv.add_(consts.view((4,) + (1,) * (pdqv.dim() - 1)))
    fp, fd, fq, fv = pdqv.unbind(0)
    return fp.mul_(fd).div_(fq.mul_(fv))


def ssim_batch(a, b, mask=None, data_range: float = 255.0, batch_size: int = 1024) -> np.ndarray:
    """Per-image mean SSIM of `b` against `a`, as skimage computes it: float64 array of shape (N,).

    Equals `skimage.metrics.structural_similarity(a[i], b[i], channel_axis=-1,
    data_range=data_range)` for every i (defaults: 7 x 7 uniform window, K1 = 0.01, K2 = 0.03,
    sample covariance; the mean over channels of the map cropped by 3 pixels on each side).

    mask: optional N x H x W bool. The result is then the mean of skimage's full SSIM map
        (`full=True`), cropped as skimage crops it, over the masked pixels (and all channels).
        An image with no masked pixel inside the crop gives NaN.
    data_range: the value range of the images (255 for uint8; pass 1.0 for floats in [0, 1]).
    Images smaller than 7 pixels on a side raise ValueError, as skimage does.
    """
    a, b, mask, data_range, batch_size = _check(a, b, mask, data_range, batch_size)
    n, h, w, c = a.shape
    if h < WIN_SIZE or w < WIN_SIZE:
        raise ValueError(
            f"images of {h} x {w} pixels are smaller than the {WIN_SIZE} x {WIN_SIZE} SSIM window; "
            f"they must be at least {WIN_SIZE} x {WIN_SIZE} (skimage: 'win_size exceeds image extent')"
        )
    if c < 1:
        raise ValueError("images must have at least one channel")
    totals = np.zeros(n, dtype=np.float64)
    cropped = (h - 2 * _PAD) * (w - 2 * _PAD)
    if mask is None:
        count = np.full(n, float(cropped * c))
    else:
        crop_mask = mask[:, _PAD:h - _PAD, _PAD:w - _PAD]
        count = crop_mask.sum(axis=(1, 2)) * float(c)
    if _exact_uint8(a, b):
        if n:
            kernel, consts = _ssim_kernel(c), _u8_consts(data_range)
            for s, x, y, m in _u8_batches(a, b, mask, batch_size):
                kernel(x, y, m, mask is not None, consts, totals[s:s + len(x)])
    else:
        _ssim_float(a, b, None if mask is None else crop_mask, data_range, batch_size, totals)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, 4.0 * totals / np.maximum(count, 1), np.nan)


def _ssim_constants(data_range: float) -> tuple[float, float]:
    """c1 = C1 NP^2 and c2 = C2 NP (NP - 1) of _ssim_map_chunk's algebra."""
    return (_K1 * data_range) ** 2 * _NP * _NP, (_K2 * data_range) ** 2 * _NP * (_NP - 1)


def _u8_consts(data_range: float) -> np.ndarray:
    """(c1/2, -c2/2, c1, -c2), rounded to float32 for the uint8 kernel."""
    c1, c2 = _ssim_constants(data_range)
    return np.array([c1 / 2, -c2 / 2, c1, -c2], dtype=np.float32)


def _ssim_float(a, b, crop_mask, data_range: float, batch_size: int, totals: np.ndarray) -> None:
    """The float64 path: adds each image's sum of S / 4 over its cropped (masked) map into `totals`."""
    n, c = a.shape[0], a.shape[3]
    img_step, ch_step = _ssim_chunks(a.shape, batch_size)
    ws = _Workspace()
    for s in range(0, n, img_step):
        e = min(n, s + img_step)
        m = None if crop_mask is None else torch.from_numpy(np.ascontiguousarray(crop_mask[s:e]))[:, None]
        for c0 in range(0, c, ch_step):
            x = _planes(a[s:e, :, :, c0:c0 + ch_step])
            y = _planes(b[s:e, :, :, c0:c0 + ch_step])
            smap = _ssim_map_chunk(x, y, data_range, ws)  # S / 4, n x C x H' x W'
            if m is not None:
                smap.mul_(m)
            totals[s:e] += smap.sum(dim=-1).sum(dim=(1, 2)).numpy()  # rows first (at most W - 6 values each)
