import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import save_file

from augdag import tasks
from augdag.errors import DataError, LineageError, ModelError, ParamsError
from augdag.generative import (
    META_KEY,
    DCGANGenerator,
    GeneratorConfig,
    dcgan_sample,
    file_hash,
    load_generator,
    load_pretrained_dcgan,
    save_generator,
    train_generator,
)
from augdag.params import parse_params
from augdag.storage import read_manifest
from augdag.tasks import run_stage
from helpers import torch_threads

THREADS = 2


fixed_threads = torch_threads(THREADS)


def bars(n_per_class=16, size=16):
    """Class 0: a horizontal bar; class 1: a vertical bar (trivially different shapes)."""
    g = np.random.default_rng(0)
    imgs, labels = [], []
    for c in (0, 1):
        for _ in range(n_per_class):
            a = (g.random((size, size)) * 30).astype(np.uint8)
            k = int(g.integers(4, size - 4))
            if c == 0:
                a[k - 2:k + 2, :] = 230
            else:
                a[:, k - 2:k + 2] = 230
            imgs.append(a[..., None])
            labels.append(c)
    return np.stack(imgs), np.array(labels)


def dark_bright_rgb(n_per_class=12, size=18):
    """3 classes of colour noise around mean brightness 40 / 128 / 215, at a size not divisible by 4."""
    g = np.random.default_rng(1)
    means = (40, 128, 215)
    imgs = [np.clip(g.normal(m, 15, (size, size, 3)), 0, 255).astype(np.uint8)
            for m in means for _ in range(n_per_class)]
    return np.stack(imgs), np.repeat(np.arange(3), n_per_class), means


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fixed_threads):
    imgs, labels = bars()
    cfg = GeneratorConfig(steps=300, batch_size=32, width=16, latent_dim=2, lr=5e-3)
    state, meta = train_generator(imgs, labels, 2, cfg, seed=3)
    path = tmp_path_factory.mktemp("g") / "g.safetensors"
    digest = save_generator(state, meta, path)
    return imgs, labels, cfg, state, meta, path, digest


def test_training_is_deterministic_and_seed_dependent(trained):
    imgs, labels, cfg, state, meta, path, digest = trained
    small = cfg.model_copy(update={"steps": 20})
    a, ma = train_generator(imgs, labels, 2, small, seed=1)
    b, _ = train_generator(imgs, labels, 2, small, seed=1)
    c, _ = train_generator(imgs, labels, 2, small, seed=2)
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert not any(torch.equal(a[k], c[k]) for k in a if k.endswith("weight"))
    assert ma == {"kind": "cvae", "version": 1, "channels": 1, "size": 16, "n_classes": 2, "latent_dim": 2, "width": 16}
    assert file_hash(path) == digest and len(digest) == 64


@pytest.mark.slow
def test_checkpoint_bytes_are_identical_in_another_process(trained, tmp_path):
    """Same inputs, seed and thread count in a fresh process -> the same checkpoint hash (lineage relies on it)."""
    imgs, labels, cfg, *_ = trained
    small = cfg.model_copy(update={"steps": 15})
    np.save(tmp_path / "x.npy", imgs)
    np.save(tmp_path / "y.npy", labels)
    here = save_generator(*train_generator(imgs, labels, 2, small, seed=9), tmp_path / "here.safetensors")
    code = textwrap.dedent(f"""
        import numpy as np, torch
        torch.set_num_threads({THREADS})
        from augdag.generative import GeneratorConfig, save_generator, train_generator
        cfg = GeneratorConfig.model_validate_json({small.model_dump_json()!r})
        x, y = np.load({str(tmp_path / 'x.npy')!r}), np.load({str(tmp_path / 'y.npy')!r})
        print(save_generator(*train_generator(x, y, 2, cfg, seed=9), {str(tmp_path / 'there.safetensors')!r}))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONHASHSEED": "123"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == here


def test_training_leaves_the_global_rng_alone(trained):
    imgs, labels, cfg, *_ = trained
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    train_generator(imgs, labels, 2, cfg.model_copy(update={"steps": 2}), seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_samples_follow_their_class(trained):
    gen = load_generator(trained[5])
    rows_minus_cols = []
    for c in (0, 1):
        imgs = gen.sample_batch([c] * 20, range(100, 120)).astype(float)[..., 0]
        # horizontal bar: row means vary more than column means; vertical bar: the reverse
        rows_minus_cols.append(imgs.mean(2).std(1) - imgs.mean(1).std(1))
    assert (rows_minus_cols[0] > 0).mean() >= 0.8 and (rows_minus_cols[1] < 0).mean() >= 0.8


def test_colour_images_of_odd_size_follow_their_class(tmp_path):
    imgs, labels, means = dark_bright_rgb()
    cfg = GeneratorConfig(steps=300, batch_size=24, width=8, latent_dim=2, lr=1e-2)
    save_generator(*train_generator(imgs, labels, 3, cfg, seed=0), tmp_path / "rgb.safetensors")
    gen = load_generator(tmp_path / "rgb.safetensors")
    assert gen.image_shape == (18, 18, 3)
    wanted = np.repeat(np.arange(3), 10)
    out = gen.sample_batch(wanted, range(200, 230))
    assert out.shape == (30, 18, 18, 3) and out.dtype == np.uint8
    nearest = np.abs(out.reshape(30, -1).mean(1)[:, None] - np.array(means)[None]).argmin(1)
    assert (nearest == wanted).mean() >= 0.8


def test_batch_equals_single_and_round_trip(trained, tmp_path):
    _, _, _, state, meta, path, digest = trained
    gen = load_generator(path)
    assert gen.n_classes == 2 and gen.image_shape == (16, 16, 1)
    pairs = [(0, 7), (1, 8), (1, 9), (0, 2**62 + 5), (1, 7)]
    batch = gen.sample_batch([c for c, _ in pairs], [np.int64(s) if i % 2 else s for i, (_, s) in enumerate(pairs)])
    assert batch.shape == (5, 16, 16, 1) and batch.dtype == np.uint8
    for img, (c, s) in zip(batch, pairs):
        np.testing.assert_array_equal(img, gen.sample(c, s))
    assert not np.array_equal(batch[1], batch[2]), "different latent seeds must give different samples"
    assert not np.array_equal(batch[0], batch[4]), "the label must change the sample"
    assert save_generator(state, meta, tmp_path / "again.safetensors") == digest
    again = load_generator(tmp_path / "again.safetensors")
    np.testing.assert_array_equal(again.sample_batch([c for c, _ in pairs], [s for _, s in pairs]), batch)
    assert gen.sample_batch([], []).shape == (0, 16, 16, 1)
    with pytest.raises(ValueError, match="label 2 outside 0..1"):
        gen.sample(2, 0)
    with pytest.raises(ValueError, match="2 labels but 1 latent seeds"):
        gen.sample_batch([0, 1], [3])


def test_batched_sampling_gives_the_one_image_bytes(trained):
    """sample_batch decodes in chunks (batched linear, channels_last deconvs, position-matched sigmoid);
    each image must equal `sample` (what replay runs) byte for byte, and the batched path must be the
    one taken here, not the one-image fallback."""
    gen = load_generator(trained[5])
    g = np.random.default_rng(7)
    labels = [int(c) for c in g.integers(0, 2, 300)]
    seeds = [int(s) for s in g.integers(0, 2**63, 300)]
    labels[1], seeds[1], seeds[2] = np.int64(1), np.uint64(2**63 + 11), 2**64 + 5  # numpy ints; a seed past 64 bits
    before = torch.get_num_threads()
    try:
        for threads in (1, THREADS):
            torch.set_num_threads(threads)
            batch = gen.sample_batch(labels, seeds)  # chunks of 256 and 44
            single = np.stack([gen.sample(c, s) for c, s in zip(labels, seeds)])
            assert batch.shape == (300, 16, 16, 1) and batch.dtype == np.uint8
            assert batch.tobytes() == single.tobytes()
            assert len({im.tobytes() for im in batch}) == 300, "every (label, seed) pair gives its own image"
            assert gen.batch_checks.get((256, threads)) is True and gen.batch_checks.get((44, threads)) is True, \
                gen.batch_checks
    finally:
        torch.set_num_threads(before)


def test_batch_that_differs_from_one_image_decode_falls_back(trained, monkeypatch):
    """Fault injection: one batched logit one ulp off -> the chunk check catches it, the chunk is sampled
    one image at a time (still the bytes of `sample`) and that batch size is not batched again."""
    gen = load_generator(trained[5])
    real = gen._batch_logits
    calls = []

    def off_by_one_ulp(labels, seeds):
        calls.append(len(labels))
        x = real(labels, seeds)
        x[-1, 0, 0, 0] = torch.nextafter(x[-1, 0, 0, 0], torch.tensor(np.inf))
        return x

    monkeypatch.setattr(gen, "_batch_logits", off_by_one_ulp)
    labels, seeds = [0, 1, 1, 0, 1], [3, 4, 5, 6, 7]
    want = np.stack([gen.sample(c, s) for c, s in zip(labels, seeds)])
    np.testing.assert_array_equal(gen.sample_batch(labels, seeds), want)
    assert gen.batch_checks == {(5, THREADS): False}
    np.testing.assert_array_equal(gen.sample_batch(labels, seeds), want)
    assert calls == [5], "a batch size that failed its check is not decoded in a batch again"


def test_foreign_and_wrong_shaped_files_are_refused(trained, tmp_path):
    _, _, _, state, meta, _, _ = trained
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ModelError, match="foreign.safetensors.*not an augdag generator"):
        load_generator(foreign)
    # weights of one width under metadata that claims another
    wrong = tmp_path / "wrong.safetensors"
    save_file(state, str(wrong), metadata={META_KEY: json.dumps({**meta, "width": meta["width"] * 2})})
    with pytest.raises(ModelError, match=r"wrong.safetensors.*do not fit.*needs"):
        load_generator(wrong)
    with pytest.raises(ModelError, match="nowrite.safetensors.*do not fit"):
        save_generator(state, {**meta, "latent_dim": 5}, tmp_path / "nowrite.safetensors")
    assert not (tmp_path / "nowrite.safetensors").exists()
    bad_meta = tmp_path / "badmeta.safetensors"
    save_file(state, str(bad_meta), metadata={META_KEY: json.dumps({**meta, "channels": 2})})
    with pytest.raises(ModelError, match="badmeta.safetensors.*channels = 2"):
        load_generator(bad_meta)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match="garbage.safetensors.*not a readable safetensors"):
        load_generator(garbage)
    with pytest.raises(ModelError, match="missing.safetensors.*does not exist"):
        load_generator(tmp_path / "missing.safetensors")


def _payload_file(path, marker):
    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path.write_bytes(pickle.dumps({"netG_state_dict": Payload()}, protocol=2))
    return path


@pytest.mark.parametrize("name", ["evil.pt", "evil.safetensors"])
def test_pickled_payload_is_never_executed(tmp_path, name):
    marker = tmp_path / "pwned"
    evil = _payload_file(tmp_path / name, marker)
    with pytest.raises(ModelError, match=name.replace(".", r"\.")):
        load_generator(evil)
    assert not marker.exists()


def test_dcgan_loader_refuses_pickle_payload_and_foreign_files(tmp_path):
    marker = tmp_path / "pwned"
    evil = _payload_file(tmp_path / "weights.tar", marker)
    with pytest.raises(ModelError, match=r"weights\.tar.*refused"):
        load_pretrained_dcgan(evil)
    assert not marker.exists()
    foreign = tmp_path / "foreign.tar"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    with pytest.raises(ModelError, match="foreign.tar.*netG_state_dict"):
        load_pretrained_dcgan(foreign)
    small = {k: torch.zeros_like(v) for k, v in DCGANGenerator(nz=8, ngf=4).state_dict().items()}
    small["main.3.weight"] = torch.zeros(32, 16, 3, 3)
    wrong = tmp_path / "wrong.tar"
    torch.save({"netG_state_dict": small}, wrong)
    with pytest.raises(ModelError, match=r"wrong.tar.*'main.3.weight' is \(32, 16, 3, 3\)"):
        load_pretrained_dcgan(wrong)


def test_pretrained_dcgan_samples_faces_reproducibly():  # `make setup` installs gan-face-generate: no skip
    net = load_pretrained_dcgan()
    assert (net.nz, net.nc) == (100, 3) and not net.training
    a, b, c = dcgan_sample(net, 11), dcgan_sample(net, 11), dcgan_sample(net, 12)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # a trained generator gives a structured image, not saturated or flat noise
    assert 20 < a.std() < 120 and 10 < a.mean() < 245
    # neighbouring pixels are strongly correlated in a real image, not in noise from random weights
    x = a.astype(float).mean(2)
    assert np.corrcoef(x[:, :-1].ravel(), x[:, 1:].ravel())[0, 1] > 0.8


def test_bad_training_inputs_name_the_problem():
    imgs, labels = bars(2)
    cfg = GeneratorConfig(steps=1)
    with pytest.raises(DataError, match="uint8"):
        train_generator(imgs.astype(np.float32), labels, 2, cfg, seed=0)
    with pytest.raises(DataError, match="16x12x1.*square"):
        train_generator(imgs[:, :, :12], labels, 2, cfg, seed=0)
    with pytest.raises(DataError, match="labels must lie in 0..0"):
        train_generator(imgs, labels, 1, cfg, seed=0)
    with pytest.raises(DataError, match="4 integers"):
        train_generator(imgs, labels[:3], 2, cfg, seed=0)


@pytest.mark.parametrize("key,value", [("latent_dim", 1), ("width", 0), ("steps", 0), ("batch_size", 1),
                                       ("lr", 0.0), ("beta", -1.0)])
def test_config_errors_name_the_key(key, value):
    with pytest.raises(ValidationError) as err:
        GeneratorConfig(**{key: value})
    assert err.value.errors()[0]["loc"] == (key,)
    with pytest.raises(ParamsError, match=f"generative.model.{key} = {value}"):
        parse_params({"generative": {"model": {key: value}}})


def test_config_unknown_key_and_frozen():
    with pytest.raises(ParamsError, match="generative.model.stepz: unknown key"):
        parse_params({"generative": {"model": {"stepz": 1}}})
    with pytest.raises(ValidationError):
        GeneratorConfig().steps = 3


def _generative_run(root, multiplier: int, steps: int):
    """ingest, strategy and generative on 2 images per class with a tiny generator; the params used."""
    p = parse_params({
        "ingest": {"n_per_class": 2, "n_val_per_class": 2, "n_test_per_class": 1},
        "strategy": {"traditional": {"enabled": False}, "generative": {"enabled": True, "multiplier": multiplier}},
        "generative": {"model": {"steps": steps, "batch_size": 8, "width": 8, "latent_dim": 4}},
    })
    for stage in ["ingest", "strategy", "generative"]:
        run_stage(stage, p, root)
    return p


@pytest.mark.slow
def test_generative_stage_lineage_replay_and_metrics(tmp_path, trained):
    p = _generative_run(tmp_path, multiplier=2, steps=10)
    m = read_manifest(tmp_path / "data" / "generative")
    assert len(m) == 40 and (m.groupby("label").size() == 4).all()
    assert m.generator_hash.nunique() == 1 and all(len(x) == 0 for x in m.parent_ids)
    summary = (tmp_path / "data" / "metrics" / "generative.json").read_text()
    for key in ("label_agreement", "frechet_generated_vs_val", "frechet_train_vs_val_floor"):
        assert key in summary
    for sid in m.sample_id[:3]:
        assert tasks.replay(tmp_path, sid)["match"]
    assert tasks.chain(tmp_path, m.sample_id.iloc[0])[0]["source"].startswith("generator:")
    # a checkpoint of the wrong shape for this dataset is refused with both shapes named
    wrong = parse_params({**p.model_dump(), "generative": {"checkpoint": str(trained[5])}})
    with pytest.raises(ModelError, match="16, 16, 1"):
        run_stage("generative", wrong, tmp_path)
    assert len(read_manifest(tmp_path / "data" / "generative")) == 40, "the earlier output must stay"


def test_sampling_jobs_cover_every_pair_in_class_order(monkeypatch):
    from augdag.tasks import generative

    monkeypatch.setattr(generative, "JOB_SAMPLES", 5)
    jobs = generative.sampling_jobs([3, 0, 7, 1])
    pairs = [(c, i) for job in jobs for c, a, b in job for i in range(a, b)]
    assert pairs == [(c, i) for c, n in enumerate([3, 0, 7, 1]) for i in range(n)]
    assert [sum(b - a for _, a, b in job) for job in jobs] == [5, 5, 1]
    assert generative.sampling_jobs([0, 0]) == []


def test_generative_sampling_jobs_on_workers_give_the_same_bytes(tmp_path, monkeypatch):
    """With a mapper that spreads work (as the Dask runner's), sampling runs as jobs that load the checkpoint
    from the stage's output; the shards and manifest equal the in-process run's. A checkpoint that changed under
    a job is refused by its hash."""
    from concurrent.futures import ThreadPoolExecutor

    from augdag.tasks import generative

    p = _generative_run(tmp_path, multiplier=3, steps=5)
    out = tmp_path / "data" / "generative"
    before = {f.relative_to(out): f.read_bytes() for f in out.rglob("*") if f.is_file()}
    monkeypatch.setattr(generative, "JOB_SAMPLES", 7)
    jobs = []

    def spread(fn, chunks):
        chunks = list(chunks)
        jobs.extend(chunks)
        with ThreadPoolExecutor(2) as pool:
            return list(pool.map(fn, chunks))

    spread.distributed = True
    monkeypatch.setattr(generative, "_GENERATORS", {})
    run_stage("generative", p, tmp_path, mapper=spread)
    assert {f.relative_to(out): f.read_bytes() for f in out.rglob("*") if f.is_file()} == before
    assert len(jobs) == -(-60 // 7) and all(j[0].endswith("generator.safetensors") for j in jobs)
    digest = jobs[0][1]
    with pytest.raises(ModelError, match="checkpoint hash differs"):
        generative.sample_job((str(out / "generator.safetensors"), "0" * 64, "cpu", 1, 0, [(0, 0, 1)]))
    assert digest == generative.gen.file_hash(out / "generator.safetensors")


@pytest.mark.slow
def test_diffusers_backend_in_the_stage_with_replay(tmp_path):
    """The generative stage on a tiny random class-conditional diffusers model: lineage pins the
    model folder's digest, replay regenerates the bytes, and a changed model is detected."""
    from augdag.diffusion import build_tiny, folder_digest

    model = build_tiny(tmp_path / "ddim", channels=1, size=28, n_classes=10, seed=3)
    p = parse_params({
        "ingest": {"n_per_class": 1, "n_val_per_class": 2, "n_test_per_class": 1},
        "strategy": {"traditional": {"enabled": False}, "generative": {"enabled": True, "multiplier": 1}},
        "generative": {"backend": "diffusers", "diffusers": {"path": str(model), "inference_steps": 2}},
    })
    proj = tmp_path / "proj"
    for stage in ["ingest", "strategy", "generative"]:
        run_stage(stage, p, proj)
    m = read_manifest(proj / "data" / "generative")
    assert len(m) == 10 and sorted(m.label) == list(range(10))
    assert set(m.generator_hash) == {folder_digest(model)}
    q = json.loads(m.op_params.iloc[0])
    assert q["backend"] == "diffusers" and q["inference_steps"] == 2
    assert all(tasks.replay(proj, sid)["match"] for sid in m.sample_id[:2])
    # the model changes after the run: replay refuses instead of producing other bytes
    weights = next((model / "unet").glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(LineageError, match="hash differs"):
        tasks.replay(proj, m.sample_id.iloc[0])
    # a diffusers model for another image shape is refused, the earlier output stays
    other = build_tiny(tmp_path / "ddim16", channels=1, size=16, n_classes=10)
    bad = parse_params({**p.model_dump(), "generative": {"backend": "diffusers", "diffusers": {"path": str(other)}}})
    with pytest.raises(ModelError, match="16, 16, 1"):
        run_stage("generative", bad, proj)
    assert len(read_manifest(proj / "data" / "generative")) == 10
    with pytest.raises(ParamsError, match="generative.diffusers.path"):
        parse_params({"generative": {"backend": "diffusers"}})


@pytest.mark.slow
def test_produced_quality_without_a_val_split_writes_no_nan():
    """ingest.n_val_per_class 0: the probe's val accuracy is left out, not NaN (which is not JSON)."""
    from augdag.tasks.generative import produced_quality

    g = np.random.default_rng(0)
    images = g.integers(0, 256, (6, 28, 28, 1), dtype=np.uint8)
    labels = np.array([0, 1, 0, 1, 0, 1])
    out = produced_quality(images, labels, images[:0], labels[:0], images, labels, 2)
    assert "reference_val_accuracy" not in out and 0.0 <= out["label_agreement"] <= 1.0
    json.dumps(out, allow_nan=False)
    with_val = produced_quality(images, labels, images[:2], labels[:2], images, labels, 2)
    assert 0.0 <= with_val["reference_val_accuracy"] <= 1.0
