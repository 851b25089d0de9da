"""A diffusers backend for the generative branch: sample from your own class-conditional diffusion model.

What it is for: the default generator (`augdag.generative`, a small conditional VAE) trains on CPU
in minutes from a few images per class. If you have a GPU and a class-conditional diffusion model
trained on your classes, `load_diffusion` gives a generator with the same interface
(`n_classes`, `image_shape`, `sample`, `sample_batch`) plus a `digest` that pins the model in lineage.
Nothing is downloaded: the model is read from a local folder only (`local_files_only=True`, the
path is never taken for a Hub repo id), and weights are read from safetensors only, nothing is
unpickled.

Folder layout::

    <dir>/unet/config.json                             UNet2DModel config; num_class_embeds = number of classes
    <dir>/unet/diffusion_pytorch_model.safetensors     its weights (or sharded: *.safetensors + .index.json)
    <dir>/scheduler/scheduler_config.json              a DDIMScheduler or DDPMScheduler config

The classes are the integers 0..num_class_embeds-1, in the order of the project's `classes.json`
(the label you trained class i with must be class i there). Images are `sample_size` pixels with
`in_channels` (1 or 3) channels; `out_channels` must equal `in_channels`; the model must work in
[-1, 1] pixel space (no VAE / latent diffusion).

How to make one: diffusers ships no class-conditional training script; adapt its unconditional one
(`examples/unconditional_image_generation/train_unconditional.py`): create the UNet with
`UNet2DModel(..., num_class_embeds=n_classes)`, scale images to [-1, 1], and pass
`class_labels=labels` to the UNet in the training step. Then `unet.save_pretrained(f"{dir}/unet")`
(safetensors is the default) and `noise_scheduler.save_pretrained(f"{dir}/scheduler")`; a
`DDPMPipeline` saved with `save_pretrained` has this layout already. (The Hugging Face diffusion
course's `ClassConditionedUnet`, which feeds a class embedding as extra input channels, is another
model and does not load here.) `build_tiny` writes a tiny randomly initialised model in this layout:
load it to check a setup (its samples are noise-like, it is not trained).

Sampling: DDIM (`DDIMScheduler.from_config` of the saved scheduler config, so a DDPM-trained model
is sampled with DDIM) with eta = 0, `inference_steps` steps. The initial noise is
`PCG64(latent_seed).standard_normal((C, H, W), float32)` from numpy, never torch's RNG, and eta = 0
draws no further noise, so the image is a pure function of (model, label, latent_seed, steps).
The final x in [-1, 1] maps to uint8 as round((x + 1) * 127.5) clamped to 0..255.

Determinism: on CPU, the same (label, latent_seed) gives the same bytes at the same torch version
and thread count. A torch batch does not: on CPU (torch 2.14.1, diffusers 0.42.1, `build_tiny`'s
model) 64 samples run as one batch differed from the same samples run one by one by up to 4e-6
before quantisation after 2 steps and 4e-5 after 10 steps, where 5 of their 16384 pixel values
came out one step apart. So `sample_batch` runs one sample at a time (slower on a GPU), and a
replayed sample equals its batch-generated self byte for byte. On a GPU, also call
`torch.use_deterministic_algorithms(True)` (with `CUBLAS_WORKSPACE_CONFIG=:4096:8`) and keep the
same GPU model and driver, or replay can differ in the last bit. Loading and `build_tiny` leave
torch's global RNG as they found it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from augdag.errors import ModelError

UNET_DIR = "unet"
SCHEDULER_DIR = "scheduler"
UNET_CONFIG = "config.json"
SCHEDULER_CONFIG = "scheduler_config.json"
WEIGHTS = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX = WEIGHTS + ".index.json"
SCHEDULERS = ("DDIMScheduler", "DDPMScheduler")
MIN_SIZE, MAX_SIZE = 8, 256
MAX_CLASSES = 1000


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _read_json(path: Path, what: str) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ModelError(f"{path}: {what} is not readable JSON: {err}") from None
    if not isinstance(obj, dict):
        raise ModelError(f"{path}: {what} must be a JSON object, got {type(obj).__name__}")
    return obj


def model_files(path: str | Path) -> list[str]:
    """The files that define a model folder (configs and safetensors weights), as sorted relative paths.

    These are what `digest` covers and what `load_diffusion` reads; anything else in the folder
    (a README, a pickled .bin next to the safetensors) is neither read nor hashed.
    """
    root = Path(path)
    unet = root / UNET_DIR
    files = [unet / UNET_CONFIG, root / SCHEDULER_DIR / SCHEDULER_CONFIG]
    if unet.is_dir():
        files += [p for p in unet.iterdir()
                  if p.is_file() and (p.name.endswith(".safetensors") or p.name == WEIGHTS_INDEX)]
    return sorted(p.relative_to(root).as_posix() for p in files if p.is_file())


def folder_digest(path: str | Path) -> str:
    """sha256 over `model_files(path)` in sorted relative-path order: for each file, its relative
    path, a NUL, its size in bytes, a NUL, then its bytes."""
    root = Path(path)
    h = hashlib.sha256()
    for rel in model_files(root):
        f = root / rel
        h.update(f"{rel}\0{f.stat().st_size}\0".encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _image_shape(cfg: dict, cfg_file: Path) -> tuple[int, int, int]:
    c_in, c_out = cfg.get("in_channels"), cfg.get("out_channels")
    if c_in not in (1, 3) or not _is_int(c_in) or c_out != c_in or not _is_int(c_out):
        raise ModelError(f"{cfg_file}: in_channels = {c_in!r}, out_channels = {c_out!r}; this backend needs "
                         "both equal to 1 or 3 (a pixel-space model, no latent VAE)")
    size = cfg.get("sample_size")
    hw = (size, size) if _is_int(size) else tuple(size) if isinstance(size, (list, tuple)) else ()
    if len(hw) != 2 or not all(_is_int(v) and MIN_SIZE <= v <= MAX_SIZE for v in hw):
        raise ModelError(f"{cfg_file}: sample_size = {size!r}; needs an integer or [height, width], "
                         f"each {MIN_SIZE}..{MAX_SIZE}")
    return int(hw[0]), int(hw[1]), int(c_in)


def _check_unet_config(cfg: dict, cfg_file: Path) -> int:
    """Number of classes of a class-conditional UNet2DModel config, else ModelError."""
    if cfg.get("_class_name") != "UNet2DModel":
        raise ModelError(f"{cfg_file}: _class_name is {cfg.get('_class_name')!r}; this backend loads a "
                         "diffusers UNet2DModel saved with save_pretrained")
    n = cfg.get("num_class_embeds")
    if n is None:
        raise ModelError(f"{cfg_file}: the UNet is not class-conditional (no num_class_embeds); "
                         "train it with num_class_embeds = number of classes")
    if not _is_int(n) or not 1 <= n <= MAX_CLASSES:
        raise ModelError(f"{cfg_file}: num_class_embeds = {n!r}; needs an integer 1..{MAX_CLASSES}")
    if cfg.get("class_embed_type") is not None:
        raise ModelError(f"{cfg_file}: class_embed_type = {cfg['class_embed_type']!r}; this backend needs "
                         "class_embed_type null (a learned embedding per class label)")
    return int(n)


def _check_weights(unet: Path) -> None:
    if (unet / WEIGHTS).is_file() or (unet / WEIGHTS_INDEX).is_file():
        return
    pickled = sorted(p.name for p in unet.iterdir() if p.is_file() and p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    if pickled:
        raise ModelError(f"{unet / pickled[0]}: refused, the UNet weights are pickled ({', '.join(pickled)}) and "
                         f"pickled files are never loaded; {unet / WEIGHTS} is missing. Convert them where you trust "
                         "the file: UNet2DModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)")
    raise ModelError(f"{unet / WEIGHTS}: UNet weights missing (expected {WEIGHTS} or {WEIGHTS_INDEX})")


def _check_size(cfg: dict, cfg_file: Path, unet_dir: Path) -> None:
    """Refuse a config that describes a bigger UNet than its weights hold, before any memory is allocated
    for it (a small folder whose config claims enormous channel counts would otherwise exhaust memory)."""
    import math

    from diffusers import UNet2DModel
    from safetensors import safe_open

    try:
        with torch.device("meta"):  # shapes only, no storage
            n_model = sum(p.numel() for p in UNet2DModel.from_config(cfg).parameters())
    except Exception as err:  # noqa: BLE001 -- diffusers raises ValueError, TypeError... on inconsistent configs
        raise ModelError(f"{unet_dir}: UNet config or weights do not load: {cfg_file.name}: {err}") from None
    n_file = 0
    for f in sorted(unet_dir.glob("*.safetensors")):
        try:
            with safe_open(str(f), framework="pt") as st:
                n_file += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())
        except Exception as err:  # noqa: BLE001 -- SafetensorError on a foreign or truncated file
            raise ModelError(f"{unet_dir}: UNet config or weights do not load: {f.name}: {err}") from None
    if n_model > 2 * n_file + 1_000_000:  # far more than the weights hold (a few missing tensors are named later)
        raise ModelError(f"{cfg_file}: the config describes a UNet of {n_model:,} parameters but the weights in "
                         f"{unet_dir} hold {n_file:,}; refused before building it")


class DiffusionGenerator:
    """A loaded class-conditional diffusion model: `sample(label, latent_seed)` -> one H x W x C uint8 image.

    Same interface as `augdag.generative.Generator`; `digest` is the sha256 of the model folder
    (`folder_digest`), to keep in lineage in place of a checkpoint hash.
    """

    def __init__(self, unet, scheduler, inference_steps: int, digest: str, image_shape: tuple[int, int, int],
                 n_classes: int, device: torch.device, path: Path):
        self.unet = unet.eval()
        self.scheduler = scheduler
        self.inference_steps = inference_steps
        self.digest = digest
        self.image_shape = image_shape
        self.n_classes = n_classes
        self.device = device
        self.path = path

    def noise(self, latent_seed: int) -> np.ndarray:
        """The initial noise, C x H x W float32, from PCG64(latent_seed)."""
        if not _is_int(latent_seed) or latent_seed < 0:
            raise ValueError(f"latent_seed must be a non-negative integer, got {latent_seed!r}")
        h, w, c = self.image_shape
        return np.random.Generator(np.random.PCG64(int(latent_seed))).standard_normal((c, h, w), dtype=np.float32)

    @torch.no_grad()
    def sample(self, label: int, latent_seed: int, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """One H x W x C uint8 image; `progress(step, inference_steps)` after each denoising step."""
        if not _is_int(label) or not 0 <= label < self.n_classes:
            raise ValueError(f"label {label!r} outside 0..{self.n_classes - 1}")
        x = torch.from_numpy(self.noise(latent_seed))[None].to(self.device) * self.scheduler.init_noise_sigma
        labels = torch.tensor([int(label)], dtype=torch.int64, device=self.device)
        timesteps = self.scheduler.timesteps
        for i, t in enumerate(timesteps, 1):
            out = self.unet(self.scheduler.scale_model_input(x, t), t, class_labels=labels).sample
            x = self.scheduler.step(out, t, x, eta=0.0).prev_sample
            if progress is not None:
                progress(i, len(timesteps))
        img = ((x[0].float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return img.permute(1, 2, 0).contiguous().cpu().numpy()

    def sample_batch(self, labels: Sequence[int], latent_seeds: Sequence[int],
                     progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """One image per (label, seed), N x H x W x C uint8; `progress(done, n)` after each image.

        Runs the samples one at a time, not as a torch batch: on CPU a batched UNet differs from the
        single-sample one in the last bits, and replay must give the same bytes as the batch.
        """
        labels, latent_seeds = list(labels), list(latent_seeds)
        if len(labels) != len(latent_seeds):
            raise ValueError(f"{len(labels)} labels but {len(latent_seeds)} latent seeds")
        for c, s in zip(labels, latent_seeds):  # fail before any sampling, not after minutes of it
            if not _is_int(c) or not 0 <= c < self.n_classes:
                raise ValueError(f"label {c!r} outside 0..{self.n_classes - 1}")
            self.noise(s)
        out = []
        for i, (c, s) in enumerate(zip(labels, latent_seeds), 1):
            out.append(self.sample(c, s))
            if progress is not None:
                progress(i, len(labels))
        return np.stack(out) if out else np.zeros((0, *self.image_shape), np.uint8)


def load_diffusion(path: str | Path, inference_steps: int = 50,
                   device: str | torch.device = "cpu") -> DiffusionGenerator:
    """Load a model folder (see the module docstring for its layout) for DDIM sampling on `device`.

    Reads local files only and safetensors weights only. Refuses with ModelError, naming the file:
    a missing folder or config, pickled (.bin) weights only, a UNet that is not class-conditional,
    a config or weights that do not load or do not fit each other (missing, unexpected or
    mis-shaped tensors, which diffusers itself would only warn about), non-finite weights.
    """
    if not _is_int(inference_steps) or inference_steps < 1:
        raise ValueError(f"inference_steps must be a positive integer, got {inference_steps!r}")
    root = Path(path)
    if not root.is_dir():
        raise ModelError(f"{root}: diffusion model folder does not exist")
    unet_dir, cfg_file = root / UNET_DIR, root / UNET_DIR / UNET_CONFIG
    if not cfg_file.is_file():
        raise ModelError(f"{cfg_file}: missing; a diffusion model folder needs {UNET_DIR}/{UNET_CONFIG} "
                         "(UNet2DModel.save_pretrained output)")
    cfg = _read_json(cfg_file, "UNet config")
    n_classes = _check_unet_config(cfg, cfg_file)
    image_shape = _image_shape(cfg, cfg_file)
    _check_weights(unet_dir)
    sch_file = root / SCHEDULER_DIR / SCHEDULER_CONFIG
    if not sch_file.is_file():
        raise ModelError(f"{sch_file}: missing; a diffusion model folder needs {SCHEDULER_DIR}/{SCHEDULER_CONFIG} "
                         "(scheduler.save_pretrained output)")
    sch_cfg = _read_json(sch_file, "scheduler config")
    if sch_cfg.get("_class_name") not in SCHEDULERS:
        raise ModelError(f"{sch_file}: _class_name is {sch_cfg.get('_class_name')!r}; allowed: {', '.join(SCHEDULERS)}")
    digest = folder_digest(root)

    from diffusers import DDIMScheduler, UNet2DModel

    try:
        scheduler = DDIMScheduler.from_config(sch_cfg)
    except Exception as err:  # diffusers raises ValueError, NotImplementedError, TypeError... on bad values
        raise ModelError(f"{sch_file}: scheduler config does not load: {err}") from None
    if inference_steps > scheduler.config.num_train_timesteps:
        raise ValueError(f"inference_steps {inference_steps} exceeds the scheduler's num_train_timesteps "
                         f"{scheduler.config.num_train_timesteps}")
    _check_size(cfg, cfg_file, unet_dir)
    try:
        # from_pretrained builds the model with random init first: keep torch's global RNG untouched
        with torch.random.fork_rng(devices=[]):
            unet, info = UNet2DModel.from_pretrained(
                str(unet_dir.resolve()), use_safetensors=True, local_files_only=True, low_cpu_mem_usage=False,
                torch_dtype=torch.float32, output_loading_info=True)
    except Exception as err:  # OSError, ValueError, RuntimeError, SafetensorError... on a broken folder
        raise ModelError(f"{unet_dir}: UNet config or weights do not load: {err}") from None
    bad = {k: sorted(info.get(k) or [])[:5] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if any(bad.values()):
        raise ModelError(f"{unet_dir / WEIGHTS}: weights do not fit the UNet its config describes: "
                         + "; ".join(f"{k.replace('_', ' ')} {v}" for k, v in bad.items() if v))
    for name, t in unet.state_dict().items():
        if not torch.isfinite(t).all():
            raise ModelError(f"{unet_dir / WEIGHTS}: tensor {name!r} holds NaN or infinite values")
    try:
        device = torch.device(device)
        unet = unet.to(device)
        scheduler.set_timesteps(int(inference_steps), device=device)
    except (RuntimeError, AssertionError, ValueError) as err:
        raise ModelError(f"{root}: cannot use device {device!r}: {err}") from None
    return DiffusionGenerator(unet, scheduler, int(inference_steps), digest, image_shape, n_classes, device, root)


def build_tiny(path: str | Path, channels: int, size: int, n_classes: int, seed: int = 0) -> Path:
    """Write a tiny randomly initialised class-conditional model in the folder layout; return `path`.

    Two resolution levels (8 and 16 channels, one layer each, no attention), a DDIM scheduler with
    diffusers' defaults. `size` must be even. The same arguments give the same files (and digest);
    torch's global RNG is left as it was. Load it with `load_diffusion(path, inference_steps=2)` to
    check a setup: its samples are noise-like, it is not trained.
    """
    from diffusers import DDIMScheduler, UNet2DModel

    from augdag.generative import derive_torch_seed

    if channels not in (1, 3) or not _is_int(channels):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if not _is_int(size) or not MIN_SIZE <= size <= MAX_SIZE or size % 2:
        raise ValueError(f"size must be an even integer {MIN_SIZE}..{MAX_SIZE}, got {size!r}")
    if not _is_int(n_classes) or not 1 <= n_classes <= MAX_CLASSES:
        raise ValueError(f"n_classes must be an integer 1..{MAX_CLASSES}, got {n_classes!r}")
    if not _is_int(seed):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    root = Path(path)
    for sub in (UNET_DIR, SCHEDULER_DIR):
        if (root / sub).exists():
            raise FileExistsError(f"{root / sub}: already exists; build_tiny writes into a new or empty folder")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_torch_seed(int(seed), "diffusion-tiny-init"))
        unet = UNet2DModel(
            sample_size=int(size), in_channels=int(channels), out_channels=int(channels),
            block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
            down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
            add_attention=False, num_class_embeds=int(n_classes))
    root.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(str(root / UNET_DIR), safe_serialization=True)
    DDIMScheduler().save_pretrained(str(root / SCHEDULER_DIR))
    return root


__all__ = ["DiffusionGenerator", "load_diffusion", "build_tiny", "folder_digest", "model_files"]
