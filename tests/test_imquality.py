"""augdag.imquality against scikit-image's per-image PSNR and SSIM."""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from augdag import imquality
from augdag.imquality import psnr_batch, ssim_batch

TOL = 1e-3  # the agreement the module promises
PAD = 3  # skimage crops (7 - 1) // 2 pixels before averaging


# --- reference values, one skimage call per image ------------------------------------------------


def sk_psnr(a, b, data_range=255.0):
    return np.array([peak_signal_noise_ratio(x, y, data_range=data_range) for x, y in zip(a, b)])


def sk_ssim(a, b, data_range=255.0):
    return np.array([structural_similarity(x, y, channel_axis=-1, data_range=data_range) for x, y in zip(a, b)])


def sk_ssim_masked(a, b, mask, data_range=255.0):
    """The mean of skimage's full SSIM map, cropped as skimage crops it, over the masked pixels."""
    out = []
    for x, y, m in zip(a, b, mask):
        _, smap = structural_similarity(x, y, channel_axis=-1, data_range=data_range, full=True)
        smap = smap[PAD:-PAD, PAD:-PAD]
        m = m[PAD:-PAD, PAD:-PAD]
        out.append(smap[m].mean() if m.any() else np.nan)
    return np.array(out)


def sk_psnr_masked(a, b, mask, data_range=255.0):
    return np.array([peak_signal_noise_ratio(x[m], y[m], data_range=data_range) for x, y, m in zip(a, b, mask)])


# --- images ---------------------------------------------------------------------------------------


def fmnist_like(n, h=28, w=28, c=1, seed=0):
    """Dark background, a bright textured object of random size and place: structure like FMNIST."""
    g = np.random.default_rng(seed)
    out = np.zeros((n, h, w, c), np.float64)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        cy, cx = g.uniform(0.3, 0.7) * h, g.uniform(0.3, 0.7) * w
        ry, rx = g.uniform(0.15, 0.4) * h, g.uniform(0.15, 0.4) * w
        blob = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        texture = 150 + 60 * np.sin(xx / g.uniform(1, 4)) * np.cos(yy / g.uniform(1, 4))
        for ch in range(c):
            out[i, :, :, ch] = np.where(blob, texture * g.uniform(0.7, 1.0), g.uniform(0, 20))
    return np.clip(out + g.normal(0, 5, out.shape), 0, 255).round().astype(np.uint8)


def perturb(a, kind, seed=1):
    g = np.random.default_rng(seed)
    x = a.astype(np.float64)
    if kind == "noise":
        x = x + g.normal(0, 12, a.shape)
    elif kind == "brightness":
        x = x + g.uniform(-40, 40, (len(a), 1, 1, 1))
    elif kind == "contrast_noise":
        x = (x - 128) * g.uniform(0.6, 1.4, (len(a), 1, 1, 1)) + 128 + g.normal(0, 3, a.shape)
    elif kind == "uniform":  # unrelated images
        x = g.integers(0, 256, a.shape)
    return np.clip(x, 0, 255).round().astype(np.uint8)


SHAPES = {
    "fmnist_28x28x1": dict(n=40, h=28, w=28, c=1),
    "rgb_32x32x3": dict(n=24, h=32, w=32, c=3),
    "rgb_224x224x3": dict(n=3, h=224, w=224, c=3),
}
KINDS = ["noise", "brightness", "contrast_noise", "uniform"]


# --- agreement with skimage -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_psnr_and_ssim_match_skimage(shape, kind):
    a = fmnist_like(**SHAPES[shape])
    b = perturb(a, kind)
    assert (a != b).reshape(len(a), -1).any(1).all(), "every pair must differ for the finite-PSNR check"
    p, s = psnr_batch(a, b), ssim_batch(a, b)
    assert p.shape == s.shape == (len(a),) and p.dtype == s.dtype == np.float64
    np.testing.assert_array_less(np.abs(p - sk_psnr(a, b)), TOL)
    np.testing.assert_array_less(np.abs(s - sk_ssim(a, b)), TOL)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_identical_images_ssim_one_psnr_cap(shape):
    a = fmnist_like(**SHAPES[shape], seed=3)
    s = ssim_batch(a, a.copy())
    np.testing.assert_array_less(np.abs(s - sk_ssim(a, a)), TOL)
    np.testing.assert_allclose(s, 1.0, atol=1e-6)
    assert np.all(psnr_batch(a, a.copy()) == 100.0)


def test_mixed_batch_identical_and_different():
    a = fmnist_like(10, seed=4)
    b = perturb(a, "noise")
    b[::3] = a[::3]
    p = psnr_batch(a, b)
    same = np.zeros(10, bool)
    same[::3] = True
    assert np.all(p[same] == 100.0)
    np.testing.assert_array_less(np.abs(p[~same] - sk_psnr(a[~same], b[~same])), TOL)
    assert np.all(p[~same] < 100.0)
    np.testing.assert_array_less(np.abs(ssim_batch(a, b) - sk_ssim(a, b)), TOL)


def test_uint8_path_is_tighter_than_the_promise_on_hard_cases():
    """Bright, nearly flat windows are where float32 variances would cancel; the int32 path keeps
    the difference to skimage at rounding level."""
    g = np.random.default_rng(5)
    a = np.clip(250 + g.integers(-3, 4, (12, 16, 16, 3)), 0, 255).astype(np.uint8)
    b = np.clip(a.astype(int) + g.integers(-2, 3, a.shape), 0, 255).astype(np.uint8)
    a[0], b[0] = 255, 255  # constant and equal
    a[1], b[1] = 255, 0  # constant, opposite extremes
    b[2] = 255 - a[2]
    ref = sk_ssim(a, b)
    np.testing.assert_array_less(np.abs(ssim_batch(a, b) - ref), 1e-6)
    assert ref[0] == pytest.approx(1.0) and ref[1] < 1e-3  # the cases are what they claim to be


def test_float_inputs_with_their_data_range():
    a = fmnist_like(12, c=3, h=20, w=24, seed=6).astype(np.float64) / 255.0
    b = np.clip(a + np.random.default_rng(7).normal(0, 0.05, a.shape), 0, 1)
    np.testing.assert_array_less(np.abs(psnr_batch(a, b, data_range=1.0) - sk_psnr(a, b, 1.0)), TOL)
    np.testing.assert_array_less(np.abs(ssim_batch(a, b, data_range=1.0) - sk_ssim(a, b, 1.0)), TOL)
    # float32 and uint8 inputs of the same values give the same result as float64
    a8 = fmnist_like(12, c=3, h=20, w=24, seed=6)
    b8 = perturb(a8, "noise")
    np.testing.assert_allclose(ssim_batch(a8.astype(np.float32), b8.astype(np.float32)), ssim_batch(a8, b8),
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(psnr_batch(a8.astype(np.float32), b8), psnr_batch(a8, b8), rtol=0, atol=1e-9)


def test_non_square_and_minimal_size():
    g = np.random.default_rng(8)
    for h, w in [(7, 7), (7, 30), (41, 9)]:
        a = g.integers(0, 256, (5, h, w, 2), dtype=np.uint8)
        b = perturb(a, "noise")
        np.testing.assert_array_less(np.abs(ssim_batch(a, b) - sk_ssim(a, b)), TOL)
        np.testing.assert_array_less(np.abs(psnr_batch(a, b) - sk_psnr(a, b)), TOL)


def test_arguments_are_symmetric_and_torch_tensors_accepted():
    a = fmnist_like(6, seed=9)
    b = perturb(a, "contrast_noise")
    np.testing.assert_allclose(ssim_batch(b, a), ssim_batch(a, b), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(psnr_batch(torch.from_numpy(a), torch.from_numpy(b)), psnr_batch(a, b))


# --- masks ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["fmnist_28x28x1", "rgb_32x32x3"])
def test_random_masks_match_the_masked_full_map(shape):
    a = fmnist_like(**SHAPES[shape], seed=10)
    b = perturb(a, "noise", seed=11)
    g = np.random.default_rng(12)
    mask = g.random(a.shape[:3]) < g.uniform(0.05, 0.95, (len(a), 1, 1))
    s = ssim_batch(a, b, mask)
    np.testing.assert_array_less(np.abs(s - sk_ssim_masked(a, b, mask)), TOL)
    np.testing.assert_array_less(np.abs(psnr_batch(a, b, mask) - sk_psnr_masked(a, b, mask)), TOL)
    assert np.abs(s - ssim_batch(a, b)).max() > 1e-3, "a random mask should change some values"


def rotated_with_mask(a, angles):
    """Rotate each image (fill 0) the way the traditional branch does, with the mask of pixels that
    lie wholly inside the rotated frame; the reference is the source rotated the same way."""
    src = torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255
    ones = torch.ones(1, 1, a.shape[1], a.shape[2])
    outs, refs, masks = [], [], []
    g = np.random.default_rng(13)
    for img, angle in zip(src, angles):
        rot = TF.rotate(img, float(angle), interpolation=InterpolationMode.BILINEAR, fill=0.0)
        # the "augmented" sample: the rotation plus a colour change
        outs.append((rot * float(g.uniform(0.8, 1.2))).clamp(0, 1))
        refs.append(rot)
        inside = TF.rotate(ones, float(angle), interpolation=InterpolationMode.BILINEAR, fill=0.0)[0, 0]
        masks.append(inside >= 1 - 1e-4)
    to8 = lambda t: (torch.stack(t) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # noqa: E731
    return to8(outs), to8(refs), torch.stack(masks).numpy()


def test_rotation_like_mask_matches_the_masked_full_map():
    a = fmnist_like(16, c=3, h=32, w=32, seed=14)
    angles = np.linspace(-40, 40, 16)
    samples, ref, mask = rotated_with_mask(a, angles)
    assert 0.3 < mask.mean() < 1.0 and not mask[:, 0, 0].any()  # corners fall outside the frame
    s = ssim_batch(samples, ref, mask)
    np.testing.assert_array_less(np.abs(s - sk_ssim_masked(samples, ref, mask)), TOL)
    np.testing.assert_array_less(np.abs(psnr_batch(samples, ref, mask) - sk_psnr_masked(samples, ref, mask)), TOL)


def test_mask_all_true_is_no_mask_and_masked_out_changes_are_ignored():
    a = fmnist_like(8, c=3, h=30, w=30, seed=15)
    b = perturb(a, "noise")
    full = np.ones(a.shape[:3], bool)
    np.testing.assert_allclose(ssim_batch(a, b, full), ssim_batch(a, b), rtol=0, atol=1e-12)
    np.testing.assert_allclose(psnr_batch(a, b, full), psnr_batch(a, b), rtol=0, atol=1e-12)
    # change only the left half; compare only the right half: PSNR sees identical pixels
    mask = np.zeros(a.shape[:3], bool)
    mask[:, :, 15:] = True
    c = a.copy()
    c[:, :, :15] = 255 - c[:, :, :15]
    assert np.all(psnr_batch(a, c, mask) == 100.0)
    assert np.all(psnr_batch(a, c) < 10.0)
    # SSIM windows straddle the edge, so it drops a little near it, but only there
    s_masked, s_all = ssim_batch(a, c, mask), ssim_batch(a, c)
    assert np.all(s_masked > s_all + 0.3)
    np.testing.assert_array_less(np.abs(s_masked - sk_ssim_masked(a, c, mask)), TOL)


# --- cap and NaN semantics ------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # skimage on identical images
def test_cap_semantics():
    a = fmnist_like(4, seed=16)
    b = a.copy()
    b[1, 10, 10, 0] ^= 1  # one value off by one: finite, just below the cap
    assert np.isinf(peak_signal_noise_ratio(a[0], b[0]))  # skimage: inf for identical images
    p = psnr_batch(a, b)
    assert p[0] == p[2] == p[3] == 100.0
    assert p[1] == pytest.approx(peak_signal_noise_ratio(a[1], b[1]), abs=TOL) and p[1] < 100.0
    assert np.all(psnr_batch(a, a, cap=42.0) == 42.0)
    assert np.all(np.isposinf(psnr_batch(a, a, cap=None)))
    assert np.isfinite(psnr_batch(a, b)).all()


def test_empty_masks_give_nan():
    a = fmnist_like(4, seed=17)
    b = perturb(a, "noise")
    mask = np.ones(a.shape[:3], bool)
    mask[1] = False  # nothing to compare
    mask[2] = False
    mask[2, :2, :] = True  # only pixels in the 3-pixel border that SSIM crops away
    p, s = psnr_batch(a, b, mask), ssim_batch(a, b, mask)
    assert np.isnan(p[1]) and np.isnan(s[1])
    assert np.isfinite(p[2]) and np.isnan(s[2])
    assert np.isfinite(p[[0, 3]]).all() and np.isfinite(s[[0, 3]]).all()
    # identical images with an empty mask: still NaN, not the cap
    assert np.isnan(psnr_batch(a, a, mask)[1])


def test_empty_batch():
    a = np.zeros((0, 28, 28, 1), np.uint8)
    assert psnr_batch(a, a).shape == (0,) and ssim_batch(a, a).shape == (0,)


# --- chunking -------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 3, 7, 1024])
def test_chunking_gives_the_same_result(batch_size):
    a = fmnist_like(23, c=3, h=20, w=20, seed=18)
    b = perturb(a, "contrast_noise")
    mask = np.random.default_rng(19).random(a.shape[:3]) < 0.7
    whole = dict(batch_size=10**6)
    for kw in ({}, {"mask": mask}):  # bit for bit: each image's numbers never meet another's
        np.testing.assert_array_equal(ssim_batch(a, b, batch_size=batch_size, **kw), ssim_batch(a, b, **whole, **kw))
        np.testing.assert_array_equal(psnr_batch(a, b, batch_size=batch_size, **kw), psnr_batch(a, b, **whole, **kw))


def test_result_does_not_depend_on_torch_threads():
    a = fmnist_like(20, c=3, h=40, w=40, seed=23)
    b = perturb(a, "noise")
    mask = np.random.default_rng(24).random(a.shape[:3]) < 0.7
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ssim_batch(a, b), ssim_batch(a, b, mask)
        torch.set_num_threads(2)
        two = ssim_batch(a, b), ssim_batch(a, b, mask)
    finally:
        torch.set_num_threads(before)
    for x, y in zip(one, two):
        np.testing.assert_array_equal(x, y)


def test_internal_element_budget_splits_images_into_planes(monkeypatch):
    """The float path's chunks (the uint8 kernel takes whole images and needs no budget)."""
    a = fmnist_like(5, c=3, h=24, w=24, seed=20).astype(np.float64)
    b = perturb(a.astype(np.uint8), "noise").astype(np.float64)
    mask = np.random.default_rng(21).random(a.shape[:3]) < 0.5
    ref = ssim_batch(a, b), ssim_batch(a, b, mask), psnr_batch(a, b, mask)
    monkeypatch.setattr(imquality, "_CHUNK_ELEMENTS", 24 * 24)  # one channel plane per chunk
    assert imquality._ssim_chunks(a.shape, 1024) == (1, 1)
    got = ssim_batch(a, b), ssim_batch(a, b, mask), psnr_batch(a, b, mask)
    for x, y in zip(got, ref):  # the planes' sums are added in another order: equal to float64 rounding
        np.testing.assert_allclose(x, y, rtol=1e-13, atol=0)
    np.testing.assert_array_less(np.abs(got[0] - sk_ssim(a, b)), TOL)


# --- the compiled uint8 kernels against the float64 path ------------------------------------------


@pytest.mark.parametrize("c", [1, 2, 3, 4])
@pytest.mark.parametrize("h, w", [(7, 7), (28, 28), (19, 40), (64, 9)])
def test_uint8_kernels_agree_with_the_float64_path(c, h, w):
    """Two implementations of the same algebra: integer window sums with a float32 ratio (uint8), and
    float64 throughout (the same values as float64). Any channel count compiles its own kernel."""
    g = np.random.default_rng(h * 100 + w * 10 + c)
    a = g.integers(0, 256, (6, h, w, c), dtype=np.uint8)
    b = np.clip(a.astype(int) + g.integers(-40, 41, a.shape), 0, 255).astype(np.uint8)
    b[0] = a[0]  # identical pair: SSIM 1, PSNR the cap
    mask = g.random((6, h, w)) < 0.5
    mask[1] = False  # empty mask: NaN
    af, bf = a.astype(np.float64), b.astype(np.float64)
    for kw in ({}, {"mask": mask}):
        s8, sf = ssim_batch(a, b, **kw), ssim_batch(af, bf, data_range=255.0, **kw)
        assert np.array_equal(np.isnan(s8), np.isnan(sf))
        np.testing.assert_allclose(np.nan_to_num(s8), np.nan_to_num(sf), rtol=0, atol=1e-6)
        p8, pf = psnr_batch(a, b, **kw), psnr_batch(af, bf, data_range=255.0, **kw)
        np.testing.assert_array_equal(p8, pf)  # both sums of squares are exact
    assert ssim_batch(a, b)[0] == pytest.approx(1.0, abs=1e-6) and psnr_batch(a, b)[0] == 100.0
    assert np.isnan(ssim_batch(a, b, mask)[1]) and np.isnan(psnr_batch(a, b, mask)[1])


def test_uint8_kernels_on_strided_inputs_equal_contiguous_copies():
    a = fmnist_like(8, c=3, h=30, w=26, seed=30)
    b = perturb(a, "contrast_noise")
    mask = np.random.default_rng(31).random(a.shape[:3]) < 0.6
    views = [(a[:, ::-1], b[:, ::-1], mask[:, ::-1]),  # flipped rows
             (a[..., ::-1], b[..., ::-1], mask),  # channels reversed
             (a.transpose(0, 2, 1, 3), b.transpose(0, 2, 1, 3), mask.transpose(0, 2, 1)),
             (a[::2], b[::2], mask[::2])]
    for x, y, m in views:
        assert not x.flags.c_contiguous
        xc, yc, mc = (np.ascontiguousarray(v) for v in (x, y, m))
        for kw, kwc in (({}, {}), ({"mask": m}, {"mask": mc})):
            np.testing.assert_array_equal(ssim_batch(x, y, **kw), ssim_batch(xc, yc, **kwc))
            np.testing.assert_array_equal(psnr_batch(x, y, **kw), psnr_batch(xc, yc, **kwc))


def test_uint8_psnr_of_a_wide_image_does_not_overflow():
    """255 against 0 everywhere in 8 x 20,000 x 3 values: a sum of squares of 3.1e10, past int32."""
    a = np.full((1, 8, 20_000, 3), 255, np.uint8)
    b = np.zeros_like(a)
    expected = 10 * np.log10(255.0 ** 2 / 255.0 ** 2)  # MSE = 255^2: 0 dB
    assert psnr_batch(a, b)[0] == pytest.approx(expected, abs=1e-12)
    b[0, 0, 0, 0] = 254  # one value off by 1 less: the exact sum is 3.1e10 - 509
    mse = (8 * 20_000 * 3 * 255.0 ** 2 - 255.0 ** 2 + 1.0) / (8 * 20_000 * 3)
    assert psnr_batch(a, b)[0] == 10 * np.log10(255.0 ** 2 / mse)


def test_uint8_kernels_from_concurrent_threads_give_the_same_bits():
    """The kernels release the GIL and keep their buffers per call: threads may run them side by side."""
    from concurrent.futures import ThreadPoolExecutor

    a = fmnist_like(40, c=3, h=48, w=48, seed=32)
    b = perturb(a, "noise")
    mask = np.random.default_rng(33).random(a.shape[:3]) < 0.7
    alone = [ssim_batch(a[i::4], b[i::4], mask[i::4]) for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda i: ssim_batch(a[i::4], b[i::4], mask[i::4]), range(4)))
    for x, y in zip(alone, together):
        np.testing.assert_array_equal(x, y)


def test_read_only_inputs_do_not_warn():
    a = fmnist_like(3, seed=22)
    b = perturb(a, "noise")
    a.setflags(write=False)
    b.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = ssim_batch(a, b)
    np.testing.assert_array_less(np.abs(s - sk_ssim(a, b)), TOL)


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [psnr_batch, ssim_batch])
@pytest.mark.parametrize(
    "a_shape, b_shape, mask, match",
    [
        ((2, 8, 8, 1), (2, 8, 8, 3), None, "same shape"),
        ((8, 8, 1), (8, 8, 1), None, "4-D"),
        ((2, 8, 8, 1), (2, 8, 8, 1), np.ones((2, 8, 8, 1), bool), "mask must have shape"),
        ((2, 8, 8, 1), (2, 8, 8, 1), np.ones((2, 8, 9), bool), "mask must have shape"),
        ((2, 8, 8, 1), (2, 8, 8, 1), np.ones((2, 8, 8), np.uint8), "bool"),
    ],
)
def test_input_errors(fn, a_shape, b_shape, mask, match):
    with pytest.raises(ValueError, match=match):
        fn(np.zeros(a_shape, np.uint8), np.zeros(b_shape, np.uint8), mask)


@pytest.mark.parametrize("fn", [psnr_batch, ssim_batch])
def test_argument_errors(fn):
    a = np.zeros((2, 8, 8, 1), np.uint8)
    for bad in (0, -1.0, float("nan"), "x"):
        with pytest.raises(ValueError, match="data_range"):
            fn(a, a, data_range=bad)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            fn(a, a, batch_size=bad)
    with pytest.raises(ValueError, match="dtype"):
        fn(a.astype(np.complex128), a.astype(np.complex128))


def test_images_smaller_than_the_window():
    for h, w in [(6, 10), (10, 6)]:
        a = np.zeros((2, h, w, 1), np.uint8)
        with pytest.raises(ValueError, match="win_size exceeds image extent"):
            structural_similarity(a[0], a[0], channel_axis=-1)  # skimage refuses too
        with pytest.raises(ValueError, match="smaller than the 7 x 7 SSIM window"):
            ssim_batch(a, a)
        assert np.all(psnr_batch(a, a) == 100.0)  # PSNR has no window


# --- property -------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # skimage on identical images
@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 3),
    h=st.integers(7, 13),
    w=st.integers(7, 13),
    c=st.sampled_from([1, 3]),
    seed=st.integers(0, 2**32 - 1),
    spread=st.integers(0, 255),
)
def test_property_random_uint8_batches_match_skimage(n, h, w, c, seed, spread):
    g = np.random.default_rng(seed)
    base = g.integers(0, 256, (n, h, w, c))
    a = base.astype(np.uint8)
    b = np.clip(base + g.integers(-spread, spread + 1, base.shape), 0, 255).astype(np.uint8)
    mask = g.random((n, h, w)) < 0.6
    np.testing.assert_array_less(np.abs(ssim_batch(a, b) - sk_ssim(a, b)), TOL)
    got, ref = ssim_batch(a, b, mask), sk_ssim_masked(a, b, mask)
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_array_less(np.abs(np.nan_to_num(got - ref)), TOL)
    p, r = psnr_batch(a, b), sk_psnr(a, b)
    finite = np.isfinite(r)
    np.testing.assert_array_less(np.abs(p[finite] - r[finite]), TOL)
    assert np.all(p[~finite] == 100.0)
