import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from augdag.cyclegan import (
    META_KEY,
    CycleGAN,
    CycleGANConfig,
    file_hash,
    load_cyclegan,
    save_cyclegan,
    train_cyclegan,
)
from augdag.errors import DataError, ModelError
from helpers import torch_threads

THREADS = 2
TINY = CycleGANConfig(width=4, n_res=1, disc_width=4, steps=3, batch_size=4)


fixed_threads = torch_threads(THREADS)


def noise(n, shape, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def strokes(n, seed, size=28):
    """Digit-like images: 2-3 anti-aliased bright strokes, about 2.5 px thick, on black."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, size, size, 1), np.uint8)
    for i in range(n):
        img = np.zeros((size, size))
        for _ in range(int(g.integers(2, 4))):
            (y0, x0), (y1, x1) = g.uniform(5, size - 5, (2, 2))
            dy, dx = y1 - y0, x1 - x0
            t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / max(dy * dy + dx * dx, 1e-6), 0, 1)
            img = np.maximum(img, np.clip(2.5 - np.hypot(yy - y0 - t * dy, xx - x0 - t * dx), 0, 1))
        out[i, ..., 0] = (img * 255).round()
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fixed_threads):
    src, tgt = noise(6, (28, 28, 1), 0), noise(5, (28, 28, 1), 1)
    state, meta = train_cyclegan(src, tgt, TINY, seed=7)
    path = tmp_path_factory.mktemp("cg") / "cg.safetensors"
    digest = save_cyclegan(state, meta, path)
    return src, tgt, state, meta, path, digest


@pytest.mark.parametrize("shape", [(28, 28, 1), (20, 20, 3), (9, 13, 3)])
def test_translations_keep_the_image_shape(shape):
    src, tgt = noise(4, shape, 2), noise(3, shape, 3)
    state, meta = train_cyclegan(src, tgt, TINY.model_copy(update={"steps": 2}), seed=0)
    model = CycleGAN.from_state(state, meta)
    assert model.image_shape == shape and meta["image_shape"] == list(shape)
    for out in (*model.translate(src), *model.translate_back(tgt)):
        assert out.dtype == np.uint8
    assert model.translate(src)[0].shape == model.translate(src)[1].shape == src.shape
    assert model.translate_back(tgt)[0].shape == tgt.shape
    empty = model.translate(src[:0])
    assert empty[0].shape == empty[1].shape == (0, *shape)


def test_training_is_deterministic_and_seed_dependent(trained):
    src, tgt, state, meta, *_ = trained
    calls = []
    again, meta2 = train_cyclegan(src, tgt, TINY, seed=7, progress=lambda *a: calls.append(a))
    other, _ = train_cyclegan(src, tgt, TINY, seed=8)
    assert list(state) == list(again) and all(torch.equal(state[k], again[k]) for k in state)
    assert meta2 == meta
    assert not any(torch.equal(state[k], other[k]) for k in state if k.endswith("weight"))
    assert [c[:2] for c in calls] == [(1, 3), (2, 3), (3, 3)]
    assert set(calls[-1][2]) == {"gan_g", "gan_f", "cycle", "identity", "g_total", "d_a", "d_b"}
    assert {k: round(v, 6) for k, v in calls[-1][2].items()} == meta["final_losses"]
    assert {k: meta[k] for k in ("kind", "version", "seed", "steps", "n_source", "n_target")} == {
        "kind": "cyclegan", "version": 1, "seed": 7, "steps": 3, "n_source": 6, "n_target": 5}
    assert meta["config"] == TINY.model_dump()
    assert all(k.startswith(("G.", "F.")) for k in state)  # the discriminators are not kept


def test_identity_weight_zero_turns_the_identity_loss_off(trained):
    src, tgt, *_ = trained
    _, meta = train_cyclegan(src, tgt, TINY.model_copy(update={"identity_weight": 0.0, "steps": 1}), seed=7)
    assert meta["final_losses"]["identity"] == 0.0


def test_training_leaves_the_global_rng_alone(trained):
    src, tgt, *_ = trained
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    train_cyclegan(src, tgt, TINY.model_copy(update={"steps": 1}), seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_save_load_round_trip_gives_the_same_bytes_and_hash(trained, tmp_path):
    src, tgt, state, meta, path, digest = trained
    assert file_hash(path) == digest and len(digest) == 64
    assert save_cyclegan(state, meta, tmp_path / "again.safetensors") == digest  # same training, same bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.safetensors"]  # no temporary file left
    loaded = load_cyclegan(path)
    assert loaded.meta == meta and not loaded.model.training
    fresh = CycleGAN.from_state(state, meta)
    for a, b in zip(loaded.translate(src), fresh.translate(src)):
        assert a.tobytes() == b.tobytes()
    for a, b in zip(loaded.translate_back(tgt), fresh.translate_back(tgt)):
        assert a.tobytes() == b.tobytes()


def test_one_image_gives_its_row_of_a_batch(trained):
    src, tgt, _, _, path, _ = trained
    model = load_cyclegan(path).to("cpu")
    fake, rec = model.translate(src)
    for i in (0, 3, 5):
        one_fake, one_rec = model.translate(src[i:i + 1])
        assert one_fake[0].tobytes() == fake[i].tobytes() and one_rec[0].tobytes() == rec[i].tobytes()
    back, _ = model.translate_back(fake)
    assert back.tobytes() == rec.tobytes()  # the cycle runs on the uint8 translation that is returned


def _rewrite(state, meta, path, **changes):
    save_file({k: v.contiguous() for k, v in state.items()}, str(path),
              metadata={META_KEY: json.dumps({**meta, **changes})})
    return path


def test_foreign_broken_and_missing_files_are_refused(trained, tmp_path):
    _, _, state, meta, *_ = trained
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(ModelError, match="missing.safetensors.*does not exist"):
        load_cyclegan(missing)
    with pytest.raises(ModelError, match=r"model\.pt.*must be \.safetensors"):
        load_cyclegan(tmp_path / "model.pt")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match="garbage.safetensors.*not a readable safetensors"):
        load_cyclegan(garbage)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ModelError, match="foreign.safetensors.*not an augdag CycleGAN"):
        load_cyclegan(foreign)
    with pytest.raises(ModelError, match="version.safetensors.*format version 2"):
        load_cyclegan(_rewrite(state, meta, tmp_path / "version.safetensors", version=2))
    with pytest.raises(ModelError, match="shape.safetensors.*image_shape"):
        load_cyclegan(_rewrite(state, meta, tmp_path / "shape.safetensors", image_shape=[28, 28, 2]))
    bad_cfg = {**meta["config"], "width": 2}
    with pytest.raises(ModelError, match="config.safetensors.*config is invalid: width"):
        load_cyclegan(_rewrite(state, meta, tmp_path / "config.safetensors", config=bad_cfg))
    wider = {**meta["config"], "width": 8}
    with pytest.raises(ModelError, match=r"width.safetensors.*do not fit.*needs"):
        load_cyclegan(_rewrite(state, meta, tmp_path / "width.safetensors", config=wider))
    key = next(iter(state))
    less = {k: v for k, v in state.items() if k != key}
    with pytest.raises(ModelError, match=f"less.safetensors.*missing \\['{key}'\\]"):
        load_cyclegan(_rewrite(less, meta, tmp_path / "less.safetensors"))
    with pytest.raises(ModelError, match=r"more.safetensors.*unexpected \['D_A.net.0.weight'\]"):
        load_cyclegan(_rewrite({**state, "D_A.net.0.weight": torch.zeros(1)}, meta, tmp_path / "more.safetensors"))
    nan = {**state, key: torch.full_like(state[key], float("nan"))}
    with pytest.raises(ModelError, match="nan.safetensors.*NaN"):
        load_cyclegan(_rewrite(nan, meta, tmp_path / "nan.safetensors"))
    with pytest.raises(ModelError, match="nowrite.safetensors.*do not fit"):
        save_cyclegan(less, meta, tmp_path / "nowrite.safetensors")
    assert not (tmp_path / "nowrite.safetensors").exists()


def test_bad_inputs_name_the_problem(trained):
    src, tgt, state, meta, *_ = trained
    with pytest.raises(DataError, match="no source images"):
        train_cyclegan(src[:0], tgt, TINY, seed=0)
    with pytest.raises(DataError, match="no target images"):
        train_cyclegan(src, tgt[:0], TINY, seed=0)
    with pytest.raises(DataError, match="source images are 28x28x1 but target images 20x20x1"):
        train_cyclegan(src, tgt[:, :20, :20], TINY, seed=0)
    with pytest.raises(DataError, match="target images must be a uint8 array"):
        train_cyclegan(src, tgt.astype(np.float32), TINY, seed=0)
    with pytest.raises(DataError, match="7x7x1"):
        train_cyclegan(src[:, :7, :7], tgt[:, :7, :7], TINY, seed=0)
    with pytest.raises(TypeError, match="seed"):
        train_cyclegan(src, tgt, TINY, seed="1")
    model = CycleGAN.from_state(state, meta)
    with pytest.raises(DataError, match="images are 20x20x1; this CycleGAN was trained on 28x28x1"):
        model.translate(src[:, :20, :20])
    with pytest.raises(DataError, match="uint8"):
        model.translate(src[0])


@pytest.mark.slow
def test_learns_to_invert_digit_like_strokes():
    """Target = inverted strokes (unpaired): trained, the cycle reconstructs and G inverts, which an untrained
    model (one step) does not; about 5 s on 2 cores."""
    src, tgt = strokes(64, 0), 255 - strokes(64, 1)
    cfg = CycleGANConfig(width=8, n_res=1, disc_width=8, steps=150, batch_size=8, lr=2e-3)
    before = CycleGAN.from_state(*train_cyclegan(src, tgt, cfg.model_copy(update={"steps": 1}), seed=0))
    after = CycleGAN.from_state(*train_cyclegan(src, tgt, cfg, seed=0))

    def errors(model):
        fake, rec = model.translate(src)
        s = src.astype(np.int16)
        return np.abs(rec - s).mean(), np.abs(fake - (255 - s)).mean(), fake.mean()

    cycle0, invert0, _ = errors(before)
    cycle1, invert1, mean1 = errors(after)
    assert cycle1 < 0.25 * cycle0 and cycle1 < 15
    assert invert1 < 0.3 * invert0 and invert1 < 25
    assert abs(mean1 - tgt.mean()) < 0.25 * abs(src.mean() - tgt.mean())
