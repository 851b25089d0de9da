"""Unpaired image-to-image translation for the cross-domain branch: a small CycleGAN (Zhu et al. 2017).

The architecture is the paper's (and junyanz/pytorch-CycleGAN-and-pix2pix's `ResnetGenerator` and
`NLayerDiscriminator`), scaled down for 28x28-ish images on a CPU:

- generator (G: source A -> target B, F: B -> A): reflect-pad 3, 7x7 conv (w), InstanceNorm, ReLU; two 3x3
  stride-2 convs (2w, 4w), each InstanceNorm + ReLU; `n_res` residual blocks (reflect pad, 3x3 conv,
  InstanceNorm, ReLU, reflect pad, 3x3 conv, InstanceNorm, plus the input); two upsamples (nearest x2, reflect
  pad, 3x3 conv, InstanceNorm, ReLU; 2w, w); reflect-pad 3, 7x7 conv (C), tanh. Nearest upsampling plus a conv
  rather than a transposed conv avoids checkerboard artefacts and gives exact sizes: the input is reflect-padded
  on the right and bottom to a multiple of 4 and the output cropped back, so any H, W >= 8 comes back
  H x W (28 -> 14 -> 7 -> 14 -> 28; 18 is padded to 20).
- discriminator (D_A judges domain A, D_B domain B): a PatchGAN, 4x4 convs: stride 2 (d) LeakyReLU 0.2,
  stride 2 (2d) InstanceNorm LeakyReLU, stride 1 (4d) InstanceNorm LeakyReLU, stride 1 to a 1-channel patch
  map. Images under 12 px a side are reflect-padded to 12 for it, the least size that leaves its last
  InstanceNorm more than one value per channel.
- losses: least-squares GAN (MSE to 1 for real, 0 for fake), L1 cycle consistency in both directions times
  `cycle_weight`, identity L1 (G(b) ~ b, F(a) ~ a) times `identity_weight * cycle_weight` (skipped at 0).
  Adam (lr, betas 0.5 and 0.999) for G and F together and for D_A and D_B together; each step updates the
  generators first, then the discriminators on the same step's fakes with their loss halved, as the paper
  does. There is no image pool (the paper keeps 50 past fakes): with a few hundred steps of a small model
  it adds state and little, and without it a step depends on nothing but the weights and its batch.
  Weights start N(0, 0.02), biases 0 (the reference code's `init_type=normal`); InstanceNorm has no
  affine parameters and conv layers have biases, as there.

Pixels map to [-1, 1] (x / 127.5 - 1) and back as ((y + 1) * 127.5).round().clamp(0, 255). Each step draws
`batch_size` images from each domain, with replacement, from one seeded `torch.Generator` on the CPU
(whatever device trains), and torch's global RNG is never touched, so the same inputs, seed and torch
thread count give bit-identical weights on CPU.

A checkpoint holds G and F only (the discriminators are needed for training, not for translation): a
safetensors file with one JSON metadata key (a multi-key map is written in per-process hash order), so the
same training gives the same bytes; its sha256 is the hash kept in lineage. `CycleGAN.translate` runs each
image alone, so an image's bytes never depend on the other images in the call (see its docstring).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn

from augdag import cancel
from augdag.errors import DataError, ModelError, StorageError
from augdag.generative import file_hash, read_checkpoint
from augdag.params import CycleGANConfig
from augdag.seeding import derive_seed

META_KEY = "augdag_cyclegan"
KIND = "cyclegan"
FORMAT_VERSION = 1
MIN_SIZE, MAX_SIZE = 8, 256
CHANNELS = (1, 3)
DISC_MIN_SIZE = 12
LOSS_DIGITS = 6  # final losses in the metadata: enough to compare runs, short enough to read

Progress = Callable[[int, int, dict], None]


def _seed(seed: int, what: str) -> int:
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    return derive_seed(seed, "cyclegan", what)


class _ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """N x C x H x W in [-1, 1] -> the same shape in [-1, 1], for any H, W >= 8."""

    def __init__(self, channels: int, width: int, n_res: int):
        super().__init__()
        w = width

        def up(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3),
                    nn.InstanceNorm2d(cout), nn.ReLU(True)]

        self.net = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(channels, w, 7), nn.InstanceNorm2d(w), nn.ReLU(True),
            nn.Conv2d(w, 2 * w, 3, 2, 1), nn.InstanceNorm2d(2 * w), nn.ReLU(True),
            nn.Conv2d(2 * w, 4 * w, 3, 2, 1), nn.InstanceNorm2d(4 * w), nn.ReLU(True),
            *[_ResBlock(4 * w) for _ in range(n_res)],
            *up(4 * w, 2 * w), *up(2 * w, w),
            nn.ReflectionPad2d(3), nn.Conv2d(w, channels, 7), nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = -h % 4, -w % 4
        if ph or pw:
            x = nn.functional.pad(x, (0, pw, 0, ph), mode="reflect")
        return self.net(x)[..., :h, :w]


class PatchDiscriminator(nn.Module):
    """N x C x H x W in [-1, 1] -> N x 1 x h x w patch scores (real ~ 1, fake ~ 0)."""

    def __init__(self, channels: int, width: int):
        super().__init__()
        d = width
        self.net = nn.Sequential(
            nn.Conv2d(channels, d, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(d, 2 * d, 4, 2, 1), nn.InstanceNorm2d(2 * d), nn.LeakyReLU(0.2, True),
            nn.Conv2d(2 * d, 4 * d, 4, 1, 1), nn.InstanceNorm2d(4 * d), nn.LeakyReLU(0.2, True),
            nn.Conv2d(4 * d, 1, 4, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = max(0, DISC_MIN_SIZE - h), max(0, DISC_MIN_SIZE - w)
        if ph or pw:
            x = nn.functional.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="reflect")
        return self.net(x)


def _translators(channels: int, cfg: CycleGANConfig) -> nn.ModuleDict:
    """G (A -> B) and F (B -> A); the checkpoint's keys are this dict's state-dict keys ("G.net.1.weight"...)."""
    # building runs torch's default init, which draws from the global RNG: keep that RNG as it was
    with torch.random.fork_rng(devices=[]):
        return nn.ModuleDict({"G": ResnetGenerator(channels, cfg.width, cfg.n_res),
                              "F": ResnetGenerator(channels, cfg.width, cfg.n_res)})


def _init_weights(modules: list[nn.Module], gen: torch.Generator) -> None:
    """N(0, 0.02) conv weights, zero biases, drawn from `gen` in module order."""
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02, generator=gen)
                nn.init.zeros_(m.bias)


def _check_images(name: str, images) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        got = f"{type(images).__name__} {getattr(images, 'dtype', '')} {getattr(images, 'shape', '')}"
        raise DataError(f"train_cyclegan: {name} images must be a uint8 array N x H x W x C, got {got}")
    n, h, w, c = images.shape
    if n < 1:
        raise DataError(f"train_cyclegan: no {name} images")
    if not (MIN_SIZE <= h <= MAX_SIZE and MIN_SIZE <= w <= MAX_SIZE) or c not in CHANNELS:
        raise DataError(f"train_cyclegan: {name} images are {h}x{w}x{c}; the CycleGAN needs H and W in "
                        f"{MIN_SIZE}..{MAX_SIZE} px and C = 1 or 3")


def _to_unit(images: np.ndarray, device) -> torch.Tensor:
    """uint8 N x H x W x C -> float N x C x H x W in [-1, 1] on `device`."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x.div(127.5).sub(1.0).contiguous().to(device)


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """float N x C x H x W in [-1, 1] -> uint8 N x H x W x C."""
    return ((x.cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def train_cyclegan(source: np.ndarray, target: np.ndarray, cfg: CycleGANConfig, seed: int,
                   progress: Progress | None = None, device: torch.device | str = "cpu") -> tuple[dict, dict]:
    """Train G: source -> target and F: target -> source; returns (state dict, meta) for `save_cyclegan`.

    `source` and `target` are N x H x W x C uint8 arrays of the same H, W, C (their N may differ). The state
    holds G's and F's tensors only (on the CPU), the meta the format, image shape, config, seed and the last
    step's losses. Deterministic: the same inputs, seed and torch thread count give bit-identical tensors on
    CPU; batches are drawn on the CPU whatever `device` trains, so a GPU run sees the same draws.
    `progress(step, total_steps, losses)` is called after every step with that step's losses as a dict of
    floats: gan_g, gan_f (LSGAN terms of G and F), cycle (the two L1s, summed, unweighted), identity (likewise;
    0 when off), g_total (the weighted sum G and F minimise), d_a, d_b (the halved discriminator losses).
    """
    if not isinstance(cfg, CycleGANConfig):
        raise TypeError(f"cfg must be a CycleGANConfig, got {type(cfg).__name__}")
    _check_images("source", source)
    _check_images("target", target)
    if source.shape[1:] != target.shape[1:]:
        raise DataError(f"train_cyclegan: source images are {'x'.join(map(str, source.shape[1:]))} but target "
                        f"images {'x'.join(map(str, target.shape[1:]))}; both domains need the same H x W x C")
    init_seed, batch_seed = _seed(seed, "init"), _seed(seed, "batches")
    _, h, w, c = source.shape
    device = torch.device(device)

    gens = _translators(c, cfg)
    with torch.random.fork_rng(devices=[]):
        discs = nn.ModuleDict({"D_A": PatchDiscriminator(c, cfg.disc_width),
                               "D_B": PatchDiscriminator(c, cfg.disc_width)})
    _init_weights([gens["G"], gens["F"], discs["D_A"], discs["D_B"]], torch.Generator().manual_seed(init_seed))
    gens.to(device).train()
    discs.to(device).train()
    G, F, D_A, D_B = gens["G"], gens["F"], discs["D_A"], discs["D_B"]

    xa, xb = _to_unit(source, device), _to_unit(target, device)
    na, nb, bs = len(source), len(target), cfg.batch_size
    draws = torch.Generator().manual_seed(batch_seed)
    opt_g = torch.optim.Adam(gens.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discs.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    mse, l1 = nn.functional.mse_loss, nn.functional.l1_loss
    idt_weight = cfg.identity_weight * cfg.cycle_weight

    def gan(pred: torch.Tensor, real: bool) -> torch.Tensor:
        return mse(pred, torch.ones_like(pred) if real else torch.zeros_like(pred))

    losses: dict[str, float] = {}
    for step in range(1, cfg.steps + 1):
        cancel.check()
        ia = torch.randint(0, na, (bs,), generator=draws)
        ib = torch.randint(0, nb, (bs,), generator=draws)
        real_a, real_b = xa[ia.to(device)], xb[ib.to(device)]

        # generators: the discriminators' weights are fixed here, so their grads are not computed
        discs.requires_grad_(False)
        fake_b, fake_a = G(real_a), F(real_b)
        rec_a, rec_b = F(fake_b), G(fake_a)
        gan_g, gan_f = gan(D_B(fake_b), True), gan(D_A(fake_a), True)
        cycle = l1(rec_a, real_a) + l1(rec_b, real_b)
        loss_g = gan_g + gan_f + cfg.cycle_weight * cycle
        identity = torch.zeros((), device=device)
        if idt_weight > 0:
            identity = l1(G(real_b), real_b) + l1(F(real_a), real_a)
            loss_g = loss_g + idt_weight * identity
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()

        discs.requires_grad_(True)
        d_b = 0.5 * (gan(D_B(real_b), True) + gan(D_B(fake_b.detach()), False))
        d_a = 0.5 * (gan(D_A(real_a), True) + gan(D_A(fake_a.detach()), False))
        opt_d.zero_grad(set_to_none=True)
        (d_a + d_b).backward()
        opt_d.step()

        values = torch.stack([gan_g, gan_f, cycle, identity, loss_g, d_a, d_b]).detach().cpu().tolist()
        losses = dict(zip(("gan_g", "gan_f", "cycle", "identity", "g_total", "d_a", "d_b"), values))
        if progress is not None:
            progress(step, cfg.steps, dict(losses))

    meta = {"kind": KIND, "version": FORMAT_VERSION, "image_shape": [h, w, c], "config": cfg.model_dump(),
            "seed": seed, "steps": cfg.steps, "n_source": na, "n_target": nb,
            "final_losses": {k: round(v, LOSS_DIGITS) for k, v in losses.items()}}
    state = {k: v.detach().cpu().clone().contiguous() for k, v in gens.state_dict().items()}
    return state, meta


def save_cyclegan(state: dict, meta: dict, path: str | Path) -> str:
    """Write a safetensors checkpoint atomically (temporary sibling, then a rename); return its sha256."""
    from safetensors.torch import save_file

    path = Path(path)
    _check_meta(meta, path)
    _check_state(state, meta, path)
    # one metadata key only: safetensors writes a multi-key map in per-process hash order
    metadata = {META_KEY: json.dumps(meta, sort_keys=True, separators=(",", ":"))}
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        save_file({k: v.contiguous() for k, v in state.items()}, tmp, metadata=metadata)
        digest = file_hash(tmp)
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        raise StorageError(f"{path}: cannot write the CycleGAN checkpoint: {err}; "
                           "the previous file (if any) is kept") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return digest


def _int(v, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _check_meta(meta, path: Path) -> CycleGANConfig:
    if not isinstance(meta, dict) or meta.get("kind") != KIND:
        raise ModelError(f"{path}: no augdag CycleGAN metadata ('{META_KEY}' with kind {KIND!r}); "
                         "not an augdag CycleGAN checkpoint")
    if meta.get("version") != FORMAT_VERSION:
        raise ModelError(f"{path}: CycleGAN format version {meta.get('version')!r}; this augdag reads {FORMAT_VERSION}")
    shape = meta.get("image_shape")
    if (not isinstance(shape, (list, tuple)) or len(shape) != 3 or not _int(shape[0], MIN_SIZE, MAX_SIZE)
            or not _int(shape[1], MIN_SIZE, MAX_SIZE) or shape[2] not in CHANNELS or isinstance(shape[2], bool)):
        raise ModelError(f"{path}: CycleGAN metadata image_shape = {shape!r}; needs [H, W, C] with H and W "
                         f"integers {MIN_SIZE}..{MAX_SIZE} and C 1 or 3")
    try:
        cfg = CycleGANConfig.model_validate(meta.get("config"))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(map(str, first["loc"])) or "config"
        raise ModelError(f"{path}: CycleGAN metadata config is invalid: {where}: {first['msg']}") from None
    seed, steps = meta.get("seed"), meta.get("steps")
    if not isinstance(seed, int) or isinstance(seed, bool) or not _int(steps, 1, 10**9):
        raise ModelError(f"{path}: CycleGAN metadata seed = {seed!r}, steps = {steps!r}; needs integers "
                         "(steps at least 1)")
    losses = meta.get("final_losses")
    if not isinstance(losses, dict) or not all(isinstance(v, (int, float)) for v in losses.values()):
        raise ModelError(f"{path}: CycleGAN metadata final_losses = {losses!r}; needs a map of names to numbers")
    return cfg


def _check_state(state: dict, meta: dict, path: Path) -> nn.ModuleDict:
    """Build G and F as `meta` describes them and check that `state` fits them key by key, shape by shape."""
    cfg = CycleGANConfig.model_validate(meta["config"])
    model = _translators(meta["image_shape"][2], cfg)
    want = model.state_dict()
    if not isinstance(state, dict):
        raise ModelError(f"{path}: CycleGAN weights must be a dict of tensors, got {type(state).__name__}")
    missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    if missing or extra:
        raise ModelError(f"{path}: weights do not fit the CycleGAN its metadata describes: "
                         f"missing {missing[:5]}, unexpected {extra[:5]}")
    for k, v in want.items():
        t = state[k]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(v.shape) or t.dtype != v.dtype:
            got = (tuple(t.shape), t.dtype) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ModelError(f"{path}: weights do not fit the CycleGAN its metadata describes: "
                             f"{k!r} is {got}, needs {(tuple(v.shape), v.dtype)}")
        if not torch.isfinite(t).all():
            raise ModelError(f"{path}: tensor {k!r} holds NaN or infinite values")
    model.load_state_dict(state, strict=True)
    return model


class CycleGAN:
    """A trained pair of translators: `translate` (G, source -> target) and `translate_back` (F, target -> source)."""

    def __init__(self, model: nn.ModuleDict, meta: dict):
        self.model = model.eval()
        self.meta = meta
        self.config = CycleGANConfig.model_validate(meta["config"])
        self.image_shape: tuple[int, int, int] = tuple(meta["image_shape"])
        self.device = torch.device("cpu")

    @classmethod
    def from_state(cls, state: dict, meta: dict) -> "CycleGAN":
        """The model `train_cyclegan` returned, without a file (validated as `load_cyclegan` validates)."""
        where = Path("<in-memory CycleGAN>")
        _check_meta(meta, where)
        return cls(_check_state(state, meta, where), meta)

    def to(self, device: torch.device | str) -> "CycleGAN":
        """Translate on `device` (images are quantised to uint8 on the CPU)."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def translate(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Source images (N x H x W x C uint8) -> (G(a), F(G(a))), both N x H x W x C uint8.

        Each image runs alone (a batch of one, under no_grad): a batched convolution's last bits can depend
        on the batch size and thread count, so this keeps an image's bytes independent of which other images
        share the call, and replaying one sample gives its bytes (at the same torch thread count and build).
        The reconstruction is F applied to the uint8 translation as returned, so it is exactly
        `translate_back(G(a))[0]`: the cycle of the image that is kept, not of unrounded floats.
        """
        return self._run(images, self.model["G"], self.model["F"], "translate")

    def translate_back(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Target images -> (F(b), G(F(b))), as `translate` with the two generators swapped."""
        return self._run(images, self.model["F"], self.model["G"], "translate_back")

    @torch.no_grad()
    def _run(self, images, first: nn.Module, second: nn.Module, name: str) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
            got = f"{type(images).__name__} {getattr(images, 'dtype', '')} {getattr(images, 'shape', '')}"
            raise DataError(f"{name}: images must be a uint8 array N x H x W x C, got {got}")
        if tuple(images.shape[1:]) != self.image_shape:
            raise DataError(f"{name}: images are {'x'.join(map(str, images.shape[1:]))}; this CycleGAN was "
                            f"trained on {'x'.join(map(str, self.image_shape))} images")
        out = np.empty(images.shape, np.uint8)
        back = np.empty(images.shape, np.uint8)
        for i in range(len(images)):
            cancel.check()
            out[i] = _to_uint8(first(_to_unit(images[i:i + 1], self.device)))[0]
            back[i] = _to_uint8(second(_to_unit(out[i:i + 1], self.device)))[0]
        return out, back


def load_cyclegan(path: str | Path) -> CycleGAN:
    """Load an augdag CycleGAN checkpoint (safetensors only: nothing is unpickled), in eval mode on the CPU."""
    path = Path(path)
    state, meta = read_checkpoint(path, META_KEY, "CycleGAN")
    _check_meta(meta, path)
    return CycleGAN(_check_state(state, meta, path), meta)


__all__ = ["CycleGANConfig", "CycleGAN", "train_cyclegan", "save_cyclegan", "load_cyclegan", "file_hash",
           "ResnetGenerator", "PatchDiscriminator"]
