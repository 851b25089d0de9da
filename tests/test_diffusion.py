"""The diffusers backend on tiny randomly initialised models (real diffusers, CPU, 2 DDIM steps)."""

import json
import shutil

import numpy as np
import pytest
import torch

from augdag.diffusion import build_tiny, folder_digest, load_diffusion
from augdag.errors import ModelError

STEPS = 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Two model folders: 1 channel 16 px 3 classes, 3 channels 12 px 4 classes."""
    base = tmp_path_factory.mktemp("diffusion")
    return {1: build_tiny(base / "gray", channels=1, size=16, n_classes=3, seed=0),
            3: build_tiny(base / "rgb", channels=3, size=12, n_classes=4, seed=0)}


@pytest.fixture(scope="module")
def gen(tiny):
    return load_diffusion(tiny[1], inference_steps=STEPS)


@pytest.fixture
def copy(tiny, tmp_path):
    """A writable copy of the 1-channel model folder."""
    return shutil.copytree(tiny[1], tmp_path / "model")


@pytest.mark.parametrize("channels, shape, n_classes", [(1, (16, 16, 1), 3), (3, (12, 12, 3), 4)])
def test_shapes_and_dtype(tiny, channels, shape, n_classes):
    g = load_diffusion(tiny[channels], inference_steps=STEPS)
    assert g.image_shape == shape and g.n_classes == n_classes
    img = g.sample(n_classes - 1, 11)
    assert img.shape == shape and img.dtype == np.uint8
    assert len(np.unique(img)) > 2  # not a constant or fully saturated image: the [-1, 1] -> uint8 map is in use
    batch = g.sample_batch([0, n_classes - 1], [1, 2])
    assert batch.shape == (2, *shape) and batch.dtype == np.uint8
    empty = g.sample_batch([], [])
    assert empty.shape == (0, *shape) and empty.dtype == np.uint8


def test_replay_is_byte_identical_and_batch_equals_single(gen, tiny):
    a, b = gen.sample(1, 7), gen.sample(1, 7)
    assert a.tobytes() == b.tobytes()
    labels, seeds = [0, 1, 2, 1], [5, 7, 9, 123456789012]
    batch = gen.sample_batch(labels, seeds)
    assert batch[1].tobytes() == a.tobytes()
    for img, c, s in zip(batch, labels, seeds):
        assert img.tobytes() == gen.sample(c, s).tobytes()
    again = load_diffusion(tiny[1], inference_steps=STEPS)
    assert again.sample(1, 7).tobytes() == a.tobytes()


def test_noise_is_pcg64_and_torch_global_rng_untouched(gen, tiny, tmp_path):
    want = np.random.Generator(np.random.PCG64(42)).standard_normal((1, 16, 16), dtype=np.float32)
    assert np.array_equal(gen.noise(42), want)
    state = torch.random.get_rng_state()
    gen.sample(0, 42)
    load_diffusion(tiny[1], inference_steps=STEPS)
    build_tiny(tmp_path / "t", channels=1, size=8, n_classes=2, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_different_seeds_differ(gen):
    imgs = [gen.sample(0, s).tobytes() for s in (1, 2, 3)]
    assert len(set(imgs)) == 3


def test_different_labels_differ_for_the_same_seed(gen):
    imgs = [gen.sample(c, 5).tobytes() for c in range(gen.n_classes)]
    assert len(set(imgs)) == gen.n_classes


def test_more_steps_change_the_sample(tiny, gen):
    g3 = load_diffusion(tiny[1], inference_steps=3)
    assert g3.sample(0, 5).tobytes() != gen.sample(0, 5).tobytes()
    assert g3.digest == gen.digest


def test_progress_callbacks(gen):
    steps, done = [], []
    gen.sample(0, 1, progress=lambda i, n: steps.append((i, n)))
    gen.sample_batch([0, 1, 2], [1, 2, 3], progress=lambda i, n: done.append((i, n)))
    assert steps == [(1, STEPS), (2, STEPS)]
    assert done == [(1, 3), (2, 3), (3, 3)]


def test_digest_stable_across_reload_and_rebuild(tiny, gen, tmp_path):
    assert len(gen.digest) == 64 and gen.digest == folder_digest(tiny[1])
    assert load_diffusion(tiny[1], inference_steps=5).digest == gen.digest
    same = build_tiny(tmp_path / "same", channels=1, size=16, n_classes=3, seed=0)
    other = build_tiny(tmp_path / "other", channels=1, size=16, n_classes=3, seed=1)
    assert folder_digest(same) == gen.digest
    assert folder_digest(other) != gen.digest
    (same / "README.md").write_text("notes")  # not a config or weight file: not hashed
    assert folder_digest(same) == gen.digest
    assert folder_digest(tiny[3]) != gen.digest


def test_digest_changes_when_a_weight_changes(copy, gen):
    from safetensors.torch import load_file, save_file

    w = copy / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(w))
    state["conv_out.bias"] = state["conv_out.bias"] + 0.5
    save_file(state, str(w), metadata={"format": "pt"})
    g = load_diffusion(copy, inference_steps=STEPS)
    assert g.digest != gen.digest
    assert g.sample(0, 5).tobytes() != gen.sample(0, 5).tobytes()


def test_digest_changes_when_the_scheduler_config_changes(copy, gen):
    f = copy / "scheduler" / "scheduler_config.json"
    cfg = json.loads(f.read_text())
    cfg["beta_end"] = 0.03
    f.write_text(json.dumps(cfg))
    assert load_diffusion(copy, inference_steps=STEPS).digest != gen.digest


def test_ddpm_scheduler_config_is_sampled_with_ddim(copy):
    from diffusers import DDPMScheduler

    shutil.rmtree(copy / "scheduler")
    DDPMScheduler().save_pretrained(str(copy / "scheduler"))
    g = load_diffusion(copy, inference_steps=STEPS)
    assert type(g.scheduler).__name__ == "DDIMScheduler"
    assert g.sample(0, 1).shape == (16, 16, 1)


def test_refuses_missing_folder(tmp_path):
    with pytest.raises(ModelError, match="does not exist") as err:
        load_diffusion(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(err.value)


def test_refuses_missing_unet_config(copy):
    (copy / "unet" / "config.json").unlink()
    with pytest.raises(ModelError, match=r"unet/config\.json: missing"):
        load_diffusion(copy)


def test_refuses_missing_scheduler_config(copy):
    shutil.rmtree(copy / "scheduler")
    with pytest.raises(ModelError, match=r"scheduler/scheduler_config\.json: missing"):
        load_diffusion(copy)


def test_refuses_pickled_weights_only(copy):
    from diffusers import UNet2DModel

    unet = UNet2DModel.from_pretrained(str(copy / "unet"), use_safetensors=True, local_files_only=True)
    unet.save_pretrained(str(copy / "unet"), safe_serialization=False)
    (copy / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    assert (copy / "unet" / "diffusion_pytorch_model.bin").is_file()
    with pytest.raises(ModelError, match=r"diffusion_pytorch_model\.bin: refused.*pickled"):
        load_diffusion(copy)


def test_refuses_a_unet_without_class_embeddings(copy):
    from diffusers import UNet2DModel

    with torch.random.fork_rng(devices=[]):
        unet = UNet2DModel(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                           layers_per_block=1, norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                           up_block_types=("UpBlock2D", "UpBlock2D"), add_attention=False)
    shutil.rmtree(copy / "unet")
    unet.save_pretrained(str(copy / "unet"))
    with pytest.raises(ModelError, match=r"config\.json: the UNet is not class-conditional"):
        load_diffusion(copy)


def test_refuses_a_config_that_is_not_json(copy):
    (copy / "unet" / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match=r"unet/config\.json: UNet config is not readable JSON"):
        load_diffusion(copy)


def test_refuses_a_config_that_does_not_build(copy):
    f = copy / "unet" / "config.json"
    cfg = json.loads(f.read_text())
    cfg["down_block_types"] = ["NoSuchBlock2D", "DownBlock2D"]
    f.write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="UNet config or weights do not load"):
        load_diffusion(copy)


def test_refuses_truncated_weights(copy):
    w = copy / "unet" / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[:200])
    with pytest.raises(ModelError, match="UNet config or weights do not load") as err:
        load_diffusion(copy)
    assert str(copy / "unet") in str(err.value)


def test_refuses_weights_with_a_missing_tensor(copy):
    """diffusers itself only warns and leaves the tensor randomly initialised."""
    from safetensors.torch import load_file, save_file

    w = copy / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(w))
    del state["class_embedding.weight"]
    save_file(state, str(w), metadata={"format": "pt"})
    with pytest.raises(ModelError, match=r"do not fit.*missing keys \['class_embedding\.weight'\]"):
        load_diffusion(copy)


def test_refuses_non_finite_weights(copy):
    from safetensors.torch import load_file, save_file

    w = copy / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(w))
    state["conv_out.bias"][0] = float("nan")
    save_file(state, str(w), metadata={"format": "pt"})
    with pytest.raises(ModelError, match="'conv_out.bias' holds NaN"):
        load_diffusion(copy)


@pytest.mark.parametrize("label", [-1, 3, True, 1.0, "0", None])
def test_refuses_label_out_of_range(gen, label):
    with pytest.raises(ValueError, match="outside 0..2"):
        gen.sample(label, 1)


@pytest.mark.parametrize("seed", [-1, 1.5, "3", True, None])
def test_refuses_bad_seed(gen, seed):
    with pytest.raises(ValueError, match="latent_seed must be a non-negative integer"):
        gen.sample(0, seed)


def test_batch_checks_every_pair_before_sampling(gen):
    done = []
    with pytest.raises(ValueError, match="outside"):
        gen.sample_batch([0, 1, 9], [1, 2, 3], progress=lambda i, n: done.append(i))
    with pytest.raises(ValueError, match="latent_seed"):
        gen.sample_batch([0, 1], [1, -2], progress=lambda i, n: done.append(i))
    with pytest.raises(ValueError, match="2 labels but 1 latent seeds"):
        gen.sample_batch([0, 1], [1])
    assert done == []


@pytest.mark.parametrize("steps", [0, -3, 1.5, 1001])
def test_refuses_bad_inference_steps(tiny, steps):
    with pytest.raises(ValueError, match="inference_steps"):
        load_diffusion(tiny[1], inference_steps=steps)


def test_build_tiny_refuses_bad_arguments_and_existing_model(tiny, tmp_path):
    with pytest.raises(FileExistsError):
        build_tiny(tiny[1], channels=1, size=16, n_classes=3)
    for kw in ({"channels": 2}, {"size": 15}, {"size": 4}, {"n_classes": 0}, {"seed": 1.5}):
        args = {"channels": 1, "size": 16, "n_classes": 3, **kw}
        with pytest.raises(ValueError):
            build_tiny(tmp_path / "x", **args)
    assert not (tmp_path / "x").exists()
