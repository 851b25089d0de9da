import numpy as np
import pytest
import torch

from augdag import ops
from augdag.params import OpsParams
from augdag.seeding import derive_seed

ALL_ON = OpsParams(**{name: {"p": 1.0} for name in OpsParams.model_fields})


def image(c=1, h=28, w=28, seed=0):
    g = np.random.default_rng(seed)
    a = (g.random((h, w, c)) * 80).astype(np.uint8)
    a[h // 4: 3 * h // 4, w // 3: 2 * w // 3] = 220
    return a


@pytest.mark.parametrize("name", list(ops.OPS))
@pytest.mark.parametrize("seed", [0, 1, 12345])
@pytest.mark.parametrize("channels", [1, 3])
def test_each_op_is_deterministic_and_replayable(name, seed, channels):
    cfg = OpsParams(**{n: {"p": 1.0 if n == name else 0.0} for n in OpsParams.model_fields})
    img = image(channels, seed=seed)
    applied = ops.make_params(cfg, seed, 28, 28)
    assert [a["op"] for a in applied] == [name]
    assert ops.make_params(cfg, seed, 28, 28) == applied, "drawing must depend only on the seed"
    out = ops.apply(img, applied)
    assert out.dtype == np.uint8 and out.shape == img.shape
    np.testing.assert_array_equal(out, ops.apply(img.copy(), applied))
    if name not in ("color_jitter",) or channels == 3 or applied[0]["brightness"] != 1.0:
        assert not np.array_equal(out, img) or name == "random_erasing" and applied[0]["height"] == 0, \
            f"{name} with p=1 should change the image"


def test_params_are_plain_json_and_differ_across_seeds():
    import json

    a = ops.make_params(ALL_ON, 1, 28, 28)
    b = ops.make_params(ALL_ON, 2, 28, 28)
    assert json.loads(json.dumps(a)) == a
    assert a != b
    assert [x["op"] for x in a] == list(ops.OPS)


def test_changing_one_op_leaves_other_ops_draws_unchanged():
    base = {x["op"]: x for x in ops.make_params(ALL_ON, 7, 28, 28)}
    changed = ALL_ON.model_copy(update={"rotation": ALL_ON.rotation.model_copy(update={"degrees": 90.0})})
    other = {x["op"]: x for x in ops.make_params(changed, 7, 28, 28)}
    assert other["rotation"] != base["rotation"]
    assert {k: v for k, v in other.items() if k != "rotation"} == {k: v for k, v in base.items() if k != "rotation"}


def test_probability_zero_is_identity_and_probability_is_respected():
    none = OpsParams(**{n: {"p": 0.0} for n in OpsParams.model_fields})
    img = image()
    assert ops.make_params(none, 3, 28, 28) == []
    np.testing.assert_array_equal(ops.apply(img, []), img)
    half = OpsParams(**{n: {"p": 0.5 if n == "hflip" else 0.0} for n in OpsParams.model_fields})
    hits = sum(bool(ops.make_params(half, derive_seed(0, "t", i), 28, 28)) for i in range(400))
    assert 160 < hits < 240


def test_hflip_is_exact_and_geometry_ranges_hold():
    img = image()
    np.testing.assert_array_equal(ops.apply(img, [{"op": "hflip"}]), img[:, ::-1])
    for s in range(50):
        (rot,) = ops.make_params(OpsParams(**{n: {"p": 1.0 if n == "rotation" else 0.0}
                                              for n in OpsParams.model_fields}), s, 28, 28)
        assert -15.0 <= rot["angle"] <= 15.0
    with pytest.raises(ValueError, match="unknown op"):
        ops.apply(img, [{"op": "sharpen"}])


@pytest.mark.parametrize("size,channels,n,which", [(28, 1, 400, "default"), (28, 1, 400, "all"), (28, 3, 150, "all"),
                                                 (64, 3, 40, "all"), (224, 3, 8, "default")])
def test_apply_batch_gives_the_bytes_of_apply_on_each_image(size, channels, n, which):
    """The stage applies ops in batches; replay (lineage) applies them one image at a time: same bytes."""
    cfg = OpsParams() if which == "default" else OpsParams(**{name: {"p": 0.5} for name in OpsParams.model_fields})
    g = np.random.default_rng(size * 10 + channels)
    images = (g.random((n, size, size, channels)) * 255).astype(np.uint8)
    applied = [ops.make_params(cfg, derive_seed(7, "t", i), size, size) for i in range(n)]
    assert {p["op"] for a in applied for p in a} >= {"hflip", "rotation", "affine", "color_jitter"}
    batched = ops.apply_batch(images, applied)
    one_by_one = np.stack([ops.apply(img, a) for img, a in zip(images, applied)])
    assert batched.dtype == np.uint8 and batched.shape == images.shape
    assert (batched != one_by_one).sum() == 0


def test_apply_batch_edge_records():
    img = image(1)
    images = np.stack([img] * 5)
    records = [
        [],                                                              # no op
        [{"op": "rotation", "angle": 90.0}],                             # torchvision's rot90 shortcut
        [{"op": "rotation", "angle": -360.0}],                           # angle 0: a copy
        [{"op": "affine", "tx": 2, "ty": -1, "scale": 1.0}, {"op": "hflip"}],  # out of OPS order: one by one
        [{"op": "hflip"}, {"op": "hflip"}],                              # repeated: one by one (identity)
    ]
    out = ops.apply_batch(images, records)
    for o, r in zip(out, records):
        np.testing.assert_array_equal(o, ops.apply(img, r))
    # a quarter turn in the same batch as other angles: each image gets the bytes it gets alone (an angle where
    # ops' warp and torchvision's rotate differ, so a batch that went through torchvision would show)
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    def torchvisions(angle):
        return ops.to_uint8(F.rotate(ops.to_tensor(img), angle, interpolation=InterpolationMode.BILINEAR, fill=0.0))

    odd = next(a for a in np.linspace(-15, 15, 601) if (ops.apply(img, [{"op": "rotation", "angle": float(a)}])
                                                       != torchvisions(float(a))).any())
    turns = [[{"op": "rotation", "angle": a}] for a in (90.0, float(odd), -180.0, -12.25)]
    batched = ops.apply_batch(np.stack([img] * 4), turns)
    for o, r in zip(batched, turns):
        np.testing.assert_array_equal(o, ops.apply(img, r))
    np.testing.assert_array_equal(batched[0], np.rot90(img, 1))
    np.testing.assert_array_equal(out[0], img)
    np.testing.assert_array_equal(out[4], img)
    with pytest.raises(ValueError, match="unknown op 'shear'"):
        ops.apply_batch(images[:1], [[{"op": "shear"}]])
    with pytest.raises(ValueError, match="2 images but 1 op records"):
        ops.apply_batch(images[:2], [[]])
    assert ops.apply_batch(images[:0], []).shape[0] == 0


@pytest.mark.parametrize("size,channels,n", [(28, 1, 300), (224, 3, 6)])
def test_rotation_and_affine_match_torchvisions_kernel_to_one_level(size, channels, n):
    """ops forms the sampling grid elementwise (torchvision: an MKL matrix product, whose rounding depends on the
    BLAS and the CPU); grid_sample and the fill are torchvision's. So the bytes are torchvision's but for grid
    coordinates that round across a level: at most 1 of 255, on a few values in 10,000."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    bilinear = InterpolationMode.BILINEAR
    g = np.random.default_rng(size)
    images = (g.random((n, size, size, channels)) * 255).astype(np.uint8)
    differ = total = 0
    for img in images:
        t = ops.to_tensor(img)
        rot = {"op": "rotation", "angle": float(g.uniform(-15, 15))}
        aff = {"op": "affine", "tx": int(g.integers(-3, 4)), "ty": int(g.integers(-3, 4)),
               "scale": float(g.uniform(0.9, 1.1))}
        for p, ref in ((rot, F.rotate(t, rot["angle"], interpolation=bilinear, fill=0.0)),
                       (aff, F.affine(t, angle=0.0, translate=[aff["tx"], aff["ty"]], scale=aff["scale"],
                                      shear=[0.0, 0.0], interpolation=bilinear, fill=0.0))):
            d = np.abs(ops.apply(img, [p]).astype(int) - ops.to_uint8(ref).astype(int))
            assert d.max() <= 1, p
            differ, total = differ + int((d > 0).sum()), total + d.size
    assert differ / total < 1e-3, (differ, total)


# --- the compiled kernels ------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_batch_conversions_give_to_tensor_and_to_uint8_bytes_for_every_value(channels):
    values = np.arange(256, dtype=np.uint8)
    images = np.stack([np.roll(values, k) for k in range(channels * 4)], -1).reshape(4, 16, 16, channels)
    planes = ops._to_planes(images)
    assert planes.dtype == torch.float32 and planes.shape == (4, channels, 16, 16)
    for img, t in zip(images, planes):
        assert torch.equal(t, ops.to_tensor(img))
    g = torch.Generator().manual_seed(0)
    floats = torch.rand(6, channels, 20, 24, generator=g) * 1.4 - 0.2  # out of range too: clipped
    floats[0, 0, 0, :4] = torch.tensor([0.5 / 255, 1.5 / 255, 2.5 / 255, 254.5 / 255])  # halves: to even
    pixels = ops._to_pixels(floats)
    assert pixels.dtype == np.uint8 and pixels.shape == (6, 20, 24, channels)
    for px, t in zip(pixels, floats):
        np.testing.assert_array_equal(px, ops.to_uint8(t))


@pytest.mark.parametrize("size,channels,n", [(28, 1, 200), (28, 3, 100), (224, 3, 4)])
def test_color_jitter_matches_torchvisions_functions_to_one_level(size, channels, n):
    from torchvision.transforms.v2 import functional as F

    g = np.random.default_rng(size + channels)
    images = (g.random((n, size, size, channels)) * 255).astype(np.uint8)
    ps = [{"brightness": float(b), "contrast": float(c), "saturation": float(s)}
          for b, c, s in g.uniform(0.5, 1.6, (n, 3))]
    differ = total = 0
    for img, p in zip(images, ps):
        t = ops.to_tensor(img)
        ref = F.adjust_contrast(F.adjust_brightness(t, p["brightness"]), p["contrast"])
        ref = F.adjust_saturation(ref, p["saturation"])  # a no-op on one channel, as ops
        got = ops.apply(img, [{"op": "color_jitter", **p}])
        d = np.abs(got.astype(int) - ops.to_uint8(ref).astype(int))
        assert d.max() <= 1, p
        differ, total = differ + int((d > 0).sum()), total + d.size
        assert not np.array_equal(got, img)
    assert differ / total < 1e-3, (differ, total)


@pytest.mark.parametrize("size,channels,n", [(28, 1, 300), (29, 3, 60), (224, 3, 6), (5, 1, 20)])
def test_color_jitter_in_place_on_uint8_gives_the_float_paths_bytes(size, channels, n):
    """apply_u8 (the stage's path for a jitter alone) against the float one (planes, kernel, pixels), bit for bit,
    over the whole factor range, flat and saturated images included."""
    g = np.random.default_rng(size * channels + n)
    images = (g.random((n, size, size, channels)) * 256).astype(np.uint8)
    images[0] = 0
    images[1] = 255
    images[2, ..., 0] = np.arange(size * size).reshape(size, size) % 256
    factors = g.uniform(0.0, 2.5, (n, 3))
    factors[:4] = [[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0], [2.5, 2.5, 2.5]]
    ps = [dict(zip(ops.ColorJitter.FACTORS, map(float, f))) for f in factors]
    want = ops._to_pixels(ops.ColorJitter().apply_batch(ops._to_planes(images), ps))
    got = images.copy()
    idx = list(range(0, n, 2)) + list(range(1, n, 2))  # any order of the images to change
    ops.ColorJitter().apply_u8(got, idx, [ps[i] for i in idx])
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(got, images)
    part = images.copy()
    ops.ColorJitter().apply_u8(part, [1, 3], [ps[1], ps[3]])  # only those at idx change
    np.testing.assert_array_equal(part[[0, 2]], images[[0, 2]])
    np.testing.assert_array_equal(part[[1, 3]], want[[1, 3]])
    one = [{"op": "color_jitter", **ps[5]}]  # apply_batch takes this path for a jitter alone
    np.testing.assert_array_equal(ops.apply_batch(images[5:6], [one])[0], want[5])


def test_color_jitter_refuses_what_torchvision_refuses():
    img = image(3)
    for key, value in (("brightness", -0.1), ("contrast", float("nan")), ("saturation", -2.0)):
        p = {"op": "color_jitter", "brightness": 1.0, "contrast": 1.0, "saturation": 1.0, key: value}
        with pytest.raises(ValueError, match=f"color_jitter: {key} factor .* is not a non-negative number"):
            ops.apply(img, [p])
    with pytest.raises(ValueError, match="1 or 3 channels, not 2"):
        ops.apply_batch(np.zeros((1, 8, 8, 2), np.uint8),
                        [[{"op": "color_jitter", "brightness": 1.1, "contrast": 1.0, "saturation": 1.0}]])


def test_warp_grid_and_fill_mask_are_torchvisions_formulation():
    """The kernel forms the grid with torch's elementwise float32 operations (bit for bit) and the fill mask as
    grid_sample resamples a plane of ones (to 1 ulp: grid_sample fuses a multiply-add where its CPU build does)."""
    g = np.random.default_rng(3)
    for h, w in [(28, 28), (37, 50), (224, 224)]:
        n = 5
        mats = [ops._tvg._get_inverse_affine_matrix([0.0, 0.0], float(g.uniform(-30, 30)),
                                                    [float(g.integers(-4, 5)), float(g.integers(-4, 5))],
                                                    float(g.uniform(0.8, 1.25)), [0.0, 0.0]) for _ in range(n)]
        xs, ys = (torch.from_numpy(a) for a in ops._centres(h, w))
        m = torch.tensor(mats, dtype=torch.float32).reshape(n, 2, 3, 1, 1)
        scale = torch.tensor([0.5 * w, 0.5 * h], dtype=torch.float32).view(1, 2, 1, 1)
        ref_grid = (xs * m[:, :, 0]).add_(ys * m[:, :, 1]).add_(m[:, :, 2]).div_(scale).permute(0, 2, 3, 1)
        ref_mask = torch.nn.functional.grid_sample(torch.ones(n, 1, h, w), ref_grid, mode="bilinear",
                                                   padding_mode="zeros", align_corners=False)
        grid, mask = np.empty((n, h, w, 2), np.float32), np.empty((n, 1, h, w), np.float32)
        ops._grid_kernel()(np.asarray(mats, np.float32), *ops._centres(h, w), grid, mask)
        np.testing.assert_array_equal(grid, ref_grid.numpy())
        np.testing.assert_allclose(mask, ref_mask.numpy(), rtol=0, atol=1.2e-7)
        assert 0 < (mask == 0).sum() and (mask == 1).sum() > mask.size // 2  # fill and frame both present


def test_apply_batch_from_concurrent_threads_gives_the_same_bytes():
    """The kernels release the GIL: a stage's worker threads apply chunks side by side."""
    from concurrent.futures import ThreadPoolExecutor

    cfg = OpsParams(**{name: {"p": 0.5} for name in OpsParams.model_fields})
    g = np.random.default_rng(9)
    images = (g.random((64, 40, 40, 3)) * 255).astype(np.uint8)
    applied = [ops.make_params(cfg, derive_seed(9, "t", i), 40, 40) for i in range(64)]
    alone = [ops.apply_batch(images[i::4], applied[i::4]) for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda i: ops.apply_batch(images[i::4], applied[i::4]), range(4)))
    for x, y in zip(alone, together):
        np.testing.assert_array_equal(x, y)


# --- one warp per sample (composed geometry, OpenCV) -----------------------------------------------------------

def _smooth(c=1, h=40, w=48):
    """A smooth image: bilinear resampling of it differs little from the exact transform."""
    yy, xx = np.mgrid[0:h, 0:w]
    a = 128 + 90 * np.sin(xx / 6.0)[..., None] * np.cos(yy / 7.0)[..., None] * np.ones(c)
    return a.round().astype(np.uint8)


@pytest.mark.parametrize("record", [
    [{"op": "rotation", "angle": 12.5}],
    [{"op": "affine", "tx": 3, "ty": -2, "scale": 1.07}],
    [{"op": "resized_crop", "top": 4, "left": 6, "height": 34, "width": 38}],
    [{"op": "rotation", "angle": -7.0}, {"op": "affine", "tx": -1, "ty": 2, "scale": 0.93}],
    [{"op": "hflip"}, {"op": "vflip"}, {"op": "rotation", "angle": 5.0}, {"op": "affine", "tx": 2, "ty": 0,
                                                                          "scale": 1.0}],
])
def test_one_warp_is_the_ops_in_turn_without_the_extra_resampling(record):
    """The composed map is the per-op kernels' geometry: where both show the source (the ops in turn also lose
    what an earlier op filled), the one warp and the ops in turn (torchvision's formulas, one resampling each)
    differ by interpolation only."""
    from augdag.tasks.quality.scores import aligned_source

    img = _smooth(3)
    one = ops.apply(img, record, composed=True).astype(int)
    turn = ops.apply(img, record).astype(int)
    m = ops.geometry_matrix(record, *img.shape[:2])
    inside = ops.frame_mask(m, *img.shape[:2]) & aligned_source(img, record)[1]
    inside[:2], inside[-2:], inside[:, :2], inside[:, -2:] = False, False, False, False
    assert inside.mean() > 0.5
    diff = np.abs(one - turn)[inside]
    assert diff.max() <= 6 and diff.mean() < 1.0, (diff.max(), diff.mean())


def test_exact_geometry_stays_exact_and_the_frame_mask_marks_the_fill():
    img = image(3, h=20, w=24)
    for record, want in (([{"op": "hflip"}], img[:, ::-1]), ([{"op": "vflip"}], img[::-1]),
                         ([{"op": "hflip"}, {"op": "vflip"}], img[::-1, ::-1]), ([], img),
                         ([{"op": "rotation", "angle": 180.0}], img[::-1, ::-1])):
        np.testing.assert_array_equal(ops.apply(img, record, composed=True), want)
        assert ops.frame_mask(ops.geometry_matrix(record, 20, 24), 20, 24).all()
    sq = image(1, h=21, w=21)
    np.testing.assert_array_equal(ops.apply(sq, [{"op": "rotation", "angle": 90.0}], composed=True),
                                  np.rot90(sq, 1))
    m = ops.geometry_matrix([{"op": "rotation", "angle": 30.0}], 20, 24)
    mask = ops.frame_mask(m, 20, 24)
    assert mask[10, 12] and not mask[0, 0] and not mask[19, 23]
    assert ops.geometry_matrix([{"op": "color_jitter", "brightness": 1.0, "contrast": 1.0, "saturation": 1.0}],
                               20, 24) is None


@pytest.mark.parametrize("size,channels,n", [(28, 1, 300), (33, 3, 60), (224, 3, 6)])
def test_composed_batch_gives_the_bytes_of_composed_apply(size, channels, n):
    cfg = OpsParams(**{name: {"p": 0.5} for name in OpsParams.model_fields})
    g = np.random.default_rng(size)
    images = (g.random((n, size, size, channels)) * 255).astype(np.uint8)
    applied = [ops.make_params(cfg, derive_seed(3, "c", i), size, size) for i in range(n)]
    batched = ops.apply_batch(images, applied, composed=True)
    np.testing.assert_array_equal(batched, np.stack([ops.apply(i, a, composed=True) for i, a in zip(images, applied)]))
    assert not np.array_equal(batched, ops.apply_batch(images, applied)), "one warp is not the ops in turn"
    np.testing.assert_array_equal(ops.apply_batch(list(images), applied, composed=True), batched)  # a list: same
    with pytest.raises(ValueError, match="uint8 images of one shape"):
        ops.apply_batch([images[0], images[1][:-1]], applied[:2], composed=True)


def test_one_warp_keeps_a_sample_sharper_than_one_per_op():
    """Two resamplings blur more than one: against the exact transform of a smooth image, the composed warp's
    error is the smaller."""
    img = _smooth(1, 64, 64)
    record = [{"op": "rotation", "angle": 11.0}, {"op": "resized_crop", "top": 5, "left": 3, "height": 55,
                                                  "width": 57}, {"op": "affine", "tx": 2, "ty": -3, "scale": 0.95}]
    m = ops.geometry_matrix(record, 64, 64)
    yy, xx = np.mgrid[0:64, 0:64].astype(float)
    sx, sy = m[0, 0] * xx + m[0, 1] * yy + m[0, 2], m[1, 0] * xx + m[1, 1] * yy + m[1, 2]
    exact = 128 + 90 * np.sin(sx / 6.0) * np.cos(sy / 7.0)
    inside = ops.frame_mask(m, 64, 64)
    inside[:3], inside[-3:], inside[:, :3], inside[:, -3:] = False, False, False, False
    err_one = np.abs(ops.apply(img, record, composed=True)[..., 0] - exact)[inside].mean()
    err_turn = np.abs(ops.apply(img, record)[..., 0] - exact)[inside].mean()
    assert err_one < err_turn, (err_one, err_turn)
