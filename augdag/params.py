"""Typed, validated params: one section of params.yaml per stage (as DVC's example projects do).

A wrong key or value fails at once with the file, the dotted key, the value and what is allowed.
"""

from __future__ import annotations

import io
import re
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from augdag.audio.params import AudioParams
from augdag.errors import ParamsError
from augdag.text.params import TextParams

BRANCHES = ("traditional", "mix", "generative", "crossdomain")
# the branches that run on texts (crossdomain translates images only)
TEXT_BRANCHES = ("traditional", "mix", "generative")
SOURCES = ("raw",) + BRANCHES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Prob = Field(default=0.0, ge=0.0, le=1.0)


def _range(lo: float, hi: float):
    """A [min, max] pair checked to lie within [lo, hi] and be ordered."""

    def check(v: tuple[float, float]) -> tuple[float, float]:
        a, b = v
        if not (lo <= a <= b <= hi):
            raise ValueError(f"must be [min, max] with {lo} <= min <= max <= {hi}, got {list(v)}")
        return v

    return check


def _odd(v: int) -> int:
    if v % 2 == 0:
        raise ValueError(f"must be odd, got {v}")
    return v


def Range(lo: float, hi: float):
    return Annotated[tuple[float, float], AfterValidator(_range(lo, hi))]


DeviceSpec = Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$",
                                  description="auto, cpu, cuda, cuda:N or mps")]


class IngestParams(_Strict):
    source: str = Field(
        default="fashion-mnist",
        description="'fashion-mnist', or a folder holding one subfolder of images per class",
    )
    image_size: int = Field(default=28, ge=8, le=1024)
    channels: Literal[1, 3] = 1
    n_per_class: int | None = Field(default=20, ge=1, description="train images per class; null = all")
    n_val_per_class: int = Field(default=20, ge=0)
    n_test_per_class: int = Field(default=200, ge=1)
    n_unlabelled_per_class: int = Field(
        default=0, ge=0, description="images per class drawn from the rest of the raw data without their label "
                                     "(split unlabelled), for finetune.consistency; their labels stay unread")
    shard_size: int = Field(default=4096, ge=1, le=1_000_000)
    max_image_pixels: int = Field(default=50_000_000, ge=1, description="larger images are refused")
    on_bad_file: Literal["fail", "skip"] = Field(
        default="fail", description="a folder's unreadable or unsafe files: fail lists them all and stops; skip "
                                    "leaves them out, listed in data/ingest/rejected.csv")


class BranchPlan(_Strict):
    enabled: bool = False
    multiplier: int = Field(default=1, ge=0, le=1000, description="variants per raw train sample")


class StrategyParams(_Strict):
    """Defaults: every branch on, chosen on validation accuracy by `augdag compare` (docs/compare.md; figures in
    bench/RESULTS.md, "Strategy comparison")."""

    traditional: BranchPlan = BranchPlan(enabled=True, multiplier=1)
    mix: BranchPlan = BranchPlan(enabled=True, multiplier=1)
    generative: BranchPlan = BranchPlan(enabled=True, multiplier=1)
    crossdomain: BranchPlan = BranchPlan(enabled=False, multiplier=1)  # needs crossdomain.target


class FlipParams(_Strict):
    p: float = Prob


class RotationParams(_Strict):
    p: float = Prob
    degrees: float = Field(default=15.0, ge=0.0, le=180.0)


class ResizedCropParams(_Strict):
    p: float = Prob
    scale: Range(0.01, 1.0) = (0.8, 1.0)
    ratio: Range(0.1, 10.0) = (0.75, 1.3333333333333333)


class AffineParams(_Strict):
    p: float = Prob
    translate: float = Field(default=0.1, ge=0.0, le=0.5, description="max shift, fraction of size")
    scale: Range(0.1, 10.0) = (0.9, 1.1)


class ColorJitterParams(_Strict):
    p: float = Prob
    brightness: float = Field(default=0.2, ge=0.0, le=1.0)
    contrast: float = Field(default=0.2, ge=0.0, le=1.0)
    saturation: float = Field(default=0.2, ge=0.0, le=1.0)


class BlurParams(_Strict):
    p: float = Prob
    kernel_size: Annotated[int, Field(ge=3, le=31), AfterValidator(_odd)] = 3
    sigma: Range(0.01, 20.0) = (0.1, 1.0)


class NoiseParams(_Strict):
    p: float = Prob
    std: Range(0.0, 1.0) = (0.01, 0.05)


class ErasingParams(_Strict):
    p: float = Prob
    scale: Range(0.001, 1.0) = (0.02, 0.15)
    ratio: Range(0.05, 20.0) = (0.3, 3.3)
    value: float = Field(default=0.0, ge=0.0, le=1.0)


class OpsParams(_Strict):
    """Ops run in this order; each is applied with its own probability p."""

    hflip: FlipParams = FlipParams(p=0.5)
    vflip: FlipParams = FlipParams(p=0.0)
    rotation: RotationParams = RotationParams(p=0.5)
    resized_crop: ResizedCropParams = ResizedCropParams(p=0.0)
    affine: AffineParams = AffineParams(p=0.5)
    color_jitter: ColorJitterParams = ColorJitterParams(p=0.5)
    gaussian_blur: BlurParams = BlurParams(p=0.0)
    gaussian_noise: NoiseParams = NoiseParams(p=0.0)
    random_erasing: ErasingParams = ErasingParams(p=0.0)


class TraditionalParams(_Strict):
    ops: OpsParams = OpsParams()


class _MixSettings(_Strict):
    mode: Literal["mixup", "cutmix", "both"] = "both"
    mixup_alpha: float = Field(default=0.4, gt=0.0, le=100.0, description="λ ~ Beta(α, α) for Mixup")
    cutmix_alpha: float = Field(default=1.0, gt=0.0, le=100.0, description="λ ~ Beta(α, α) for CutMix")
    cutmix_prob: float = Field(default=0.5, ge=0.0, le=1.0, description="share of CutMix when mode is both")


class MixParams(_MixSettings):
    """Offline Mixup/CutMix: stored samples with two parents (strategy.mix sets how many)."""

    pairing: Literal["any", "same_class", "cross_class"] = "any"


class OnlineMixParams(_MixSettings):
    """Mixup/CutMix per batch inside fine-tuning, as the papers do."""

    enabled: bool = False
    mode: Literal["mixup", "cutmix", "both"] = "mixup"
    prob: float = Field(default=1.0, ge=0.0, le=1.0, description="probability that a sample of a batch is mixed")


class DiffusersParams(_Strict):
    """A local class-conditional diffusers model folder (unet/ + scheduler/), see augdag/diffusion.py."""

    path: str | None = Field(default=None, description="the model folder; nothing is downloaded")
    inference_steps: int = Field(default=50, ge=1, le=1000, description="DDIM steps per sample")
    device: DeviceSpec | None = Field(default=None, description="null = the generative stage's device (device section)")


# augdag/generative.py trains with it; it lives here, not beside the model, so that reading params imports no torch
class GeneratorConfig(BaseModel):
    """Hyperparameters of the conditional VAE (params.yaml: generative.model)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latent_dim: int = Field(default=16, ge=2, le=512, description="size of the latent vector z")
    width: int = Field(default=32, ge=4, le=256, description="channels of the first conv layer (the second has 2x)")
    steps: int = Field(default=1500, ge=1, le=1_000_000, description="optimiser steps")
    batch_size: int = Field(default=64, ge=2, le=4096, description="images per step (drawn with replacement)")
    lr: float = Field(default=2e-3, gt=0.0, le=1.0, description="Adam learning rate")
    beta: float = Field(default=1.0, ge=0.0, le=100.0, description="weight of the KL term")


class GenerativeParams(_Strict):
    """A class-conditional generator trained on the train split (or loaded from `checkpoint`, or a
    local diffusers model with backend: diffusers)."""

    backend: Literal["vae", "diffusers"] = "vae"
    model: GeneratorConfig = GeneratorConfig()
    checkpoint: str | None = Field(default=None,
                                   description="an augdag generator .safetensors to use instead of training")
    diffusers: DiffusersParams = DiffusersParams()

    @model_validator(mode="after")
    def _diffusers_needs_path(self):
        if self.backend == "diffusers" and not self.diffusers.path:
            raise ValueError("backend diffusers needs generative.diffusers.path (a local model folder)")
        return self


# augdag/cyclegan.py trains with it (kept here so that reading params imports no torch)
class CycleGANConfig(BaseModel):
    """Hyperparameters of the cross-domain branch's CycleGAN (params.yaml: crossdomain.model)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int = Field(default=16, ge=4, le=256, description="channels of a generator's first conv (then 2x, 4x)")
    n_res: int = Field(default=4, ge=1, le=16, description="residual blocks at a generator's bottleneck")
    disc_width: int = Field(default=16, ge=4, le=256, description="channels of a PatchGAN discriminator's first conv")
    steps: int = Field(default=1200, ge=1, le=1_000_000, description="optimiser steps (each updates G, F and both D)")
    batch_size: int = Field(default=16, ge=1, le=4096,
                            description="images per domain per step (drawn with replacement)")
    lr: float = Field(default=2e-4, gt=0.0, le=1.0, description="Adam learning rate (betas 0.5, 0.999)")
    cycle_weight: float = Field(default=10.0, ge=0.0, le=1000.0, description="weight of the cycle-consistency L1")
    identity_weight: float = Field(default=0.5, ge=0.0, le=100.0,
                                   description="weight of the identity L1, times cycle_weight; 0 = off")


class CrossdomainParams(_Strict):
    """Unpaired translation of the labelled train split into a target domain (strategy.crossdomain turns it on)."""

    target: str | None = Field(default=None, description="a folder of unlabelled target-domain images (PNG/JPEG, "
                                                         "any size, grey or RGB, in subfolders or not)")
    max_target_images: int = Field(default=5000, ge=1, description="at most this many target images are read (a "
                                                                    "seeded choice above it)")
    model: CycleGANConfig = CycleGANConfig()


class BranchThresholds(_Strict):
    """Minimum scores a sample of one branch must reach; null = that check is off for the branch."""

    psnr: float | None = Field(default=None, ge=0.0, le=100.0, description="dB, against the (aligned) source")
    ssim: float | None = Field(default=None, ge=-1.0, le=1.0, description="against the (aligned) source")
    in_frame: float | None = Field(default=None, ge=0.0, le=1.0,
                                   description="share of the frame still showing the source")
    label_prob: float | None = Field(default=None, ge=0.0, le=1.0,
                                     description="reference classifier's probability of the label")


LABEL_PROB = 0.1


class GateThresholds(_Strict):
    traditional: BranchThresholds = BranchThresholds(psnr=30.0, ssim=0.85, label_prob=LABEL_PROB)
    mix: BranchThresholds = BranchThresholds(label_prob=LABEL_PROB)
    generative: BranchThresholds = BranchThresholds(label_prob=LABEL_PROB)
    # psnr and ssim of a translated sample: its source against its cycle reconstruction F(G(source))
    crossdomain: BranchThresholds = BranchThresholds(psnr=15.0, ssim=0.5, label_prob=LABEL_PROB)


Score = Literal["psnr", "ssim", "in_frame", "label_prob"]


class OutlierParams(_Strict):
    """Keep a sample when its score lies within `sigma` std of the mean of the last `window_size` scores."""

    window_size: int = Field(default=100, ge=2, le=1_000_000)
    sigma: float = Field(default=2.0, gt=0.0, le=1000.0)
    score: dict[Literal["traditional", "mix", "generative", "crossdomain"], Score | None] = Field(
        default_factory=lambda: {"traditional": "ssim", "mix": "label_prob", "generative": "label_prob",
                                 "crossdomain": "ssim"},
        description="the score each branch's filter watches; null turns the filter off for that branch")


# `off` unquoted is False to a YAML 1.1 reader (params.yaml, --set): read as the mode it was written as.
CheckMode = Annotated[Literal["filter", "warn", "fail", "off"], BeforeValidator(lambda v: "off" if v is False else v)]


class QualityParams(_Strict):
    thresholds: GateThresholds = GateThresholds()
    outlier: OutlierParams = OutlierParams()
    # Default: the filter checks score and warn but keep every sample, because gating all three branches cost
    # validation accuracy on the default dataset (docs/decisions.md, "The gate's defaults").
    modes: dict[str, CheckMode] = Field(
        default_factory=lambda: {"psnr": "warn", "ssim": "warn", "label_consistency": "warn", "outlier": "warn"},
        description="check name (meta.name in expectations/*.json) -> filter | warn | fail | off; "
                    "overrides the suite's own mode")
    reference_image_size: int = Field(default=32, ge=16, le=1024, description="input size of the reference classifier")
    reference_depth: int | None = Field(
        default=6, ge=1, le=7,
        description="block stages of the pretrained backbone whose pooled output the reference classifier reads "
                    "(1-7); null: the whole network's 1280-d pre-logit features")
    chunk_rows: int = Field(default=51_200, ge=1024, le=10_240_000, multiple_of=1024,
                            description="rows of a branch scored and validated at a time (bounds the stage's memory); "
                                        "a multiple of 1024, the scoring batch, so the scores do not depend on it")
    reference_max_per_class: int | None = Field(
        default=1000, ge=1,
        description="raw train images per class the reference classifier learns from (a seeded subset above this; "
                    "null: all). Bounds the quality stage's memory as the raw data grows")


class MergeParams(_Strict):
    class_balance: float = Field(default=2.0, ge=1.0, le=1000.0,
                                 description="warn when a class's sampling mass is off 1/classes by more than "
                                             "this factor")
    augmented_share: Range(0.0, 1.0) = Field(default=(0.0, 0.95), description="[min, max] share of augmented samples")
    weights: dict[str, Annotated[float, Field(ge=0.0, allow_inf_nan=False)]] = Field(
        default_factory=lambda: {"raw": 1.0, "traditional": 1.0, "mix": 1.0, "generative": 1.0,
                                 "crossdomain": 1.0},
        description="probability mass of each source when the fine-tune samples a batch (a missing source gets 1.0)",
    )
    extra_sources: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")], str] = Field(
        default_factory=dict,
        description="name -> folder of extra training images, one subfolder per class (class names as in the raw data)")

    @model_validator(mode="after")
    def _known_sources(self):
        clash = sorted(set(self.extra_sources) & set(SOURCES))
        if clash:
            raise ValueError(f"extra_sources names {clash} clash with the built-in sources {list(SOURCES)}")
        unknown = sorted(set(self.weights) - set(SOURCES) - set(self.extra_sources))
        if unknown:
            raise ValueError(f"weights for unknown sources {unknown}; "
                             f"allowed: {list(SOURCES) + sorted(self.extra_sources)}")
        return self


class SamplingParams(_Strict):
    """How the fine-tune spreads its batches over the merged set's sources (raw, branches, extra folders).

    static: each source keeps the mass merge.weights gives it. uniform: every sample is equally likely
    (a source's mass is its share of the samples). dynamic: starts from static and every `every` steps
    moves each source's weight by eta * (feedback - mean feedback), floored at w_min, then normalised.
    The feedback is the cosine between the gradient of the validation loss and the gradient of the
    training loss on a batch of that source: a first-order estimate of how much a step on that source
    lowers validation loss (see docs/finetune.md, "Source weights")."""

    mode: Literal["static", "uniform", "dynamic"] = "static"
    every: int = Field(default=19, ge=1, description="steps between weight updates (dynamic)")
    eta: float = Field(default=0.5, gt=0.0, le=100.0, description="step size of the weight update (dynamic)")
    w_min: float = Field(default=0.02, ge=0.0, lt=1.0, description="floor of a source's weight before normalising")
    feedback_batch: int = Field(default=32, ge=1, le=4096, description="samples per source and of val per feedback")


class AdversarialParams(_Strict):
    """FGSM adversarial fine-tuning on [0, 1] pixels: loss = (1 - weight) * clean + weight * adversarial."""

    enabled: bool = False
    epsilon: float = Field(default=0.03, gt=0.0, le=1.0, description="L-inf budget on [0, 1] pixels (0.01-0.1 typical)")
    random_start: bool = Field(default=False, description="start FGSM from a uniform random point in the eps-ball")
    weight: float = Field(default=0.5, ge=0.0, le=1.0, description="share of the adversarial loss")


class ConsistencyParams(_Strict):
    """FixMatch-style consistency training on ingest's unlabelled split (augdag/consistency.py)."""

    enabled: bool = False
    threshold: float = Field(default=0.95, gt=0.0, le=1.0,
                             description="the weak view's top probability from which it is a pseudo-label")
    weight: float = Field(default=1.0, ge=0.0, le=100.0, description="weight of the unlabelled loss (lambda_u)")
    ratio: int = Field(default=2, ge=1, le=64, description="unlabelled images per labelled one in a step (mu)")
    strong: Literal["randaugment", "trivial_augment_wide", "augmix"] = Field(
        default="randaugment", description="the strong view's torchvision policy, on top of the weak shift")


class FinetuneParams(_Strict):
    model: str = Field(
        default="efficientnet_lite0",
        description="'efficientnet_lite0' (packaged ImageNet weights), 'timm/<name>' or 'torchvision/<name>'",
    )
    pretrained: bool = True
    image_size: int = Field(default=64, ge=16, le=1024)
    steps: int = Field(default=190, ge=1)
    batch_size: int = Field(default=32, ge=1, le=4096)
    lr: float = Field(default=1e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(default=1e-4, ge=0.0, le=1.0)
    freeze: Literal["none", "backbone"] = "none"
    eval_every: int = Field(default=19, ge=1)
    num_threads: int = Field(default=2, ge=1, le=256, description="torch threads (kept fixed for identical bytes)")
    online_mix: OnlineMixParams = OnlineMixParams()
    online_augment: Literal["none", "trivial_augment_wide", "randaugment", "augmix"] = Field(
        default="none", description="a policy applied to every drawn sample of a batch (torchvision's "
                                    "TrivialAugmentWide, RandAugment or AugMix, their default settings)")
    sampling: SamplingParams = SamplingParams()
    adversarial: AdversarialParams = AdversarialParams()
    consistency: ConsistencyParams = ConsistencyParams()


class RobustnessParams(_Strict):
    """Accuracy under FGSM and PGD (L-inf, [0, 1] pixels) on a seeded subset of the test split."""

    enabled: bool = True
    epsilons: list[Annotated[float, Field(gt=0.0, le=1.0)]] = Field(default_factory=lambda: [0.01, 0.03, 0.1])
    attacks: list[Literal["fgsm", "pgd"]] = Field(default_factory=lambda: ["fgsm", "pgd"])
    pgd_steps: int = Field(default=5, ge=1, le=1000)
    pgd_step_size: float | None = Field(default=None, gt=0.0, le=1.0, description="null = 2.5 * eps / pgd_steps")
    n_samples: int = Field(default=200, ge=1, description="test samples attacked (a seeded, class-stratified subset)")


class EvaluateParams(_Strict):
    batch_size: int = Field(default=256, ge=1, le=65536)
    target_test: str | None = Field(
        default=None, description="a labelled test set of the target domain: a folder with one subfolder of images "
                                  "per class, named as the raw data's classes; its accuracy is reported beside "
                                  "the test split's")
    min_accuracy: float = Field(default=0.0, ge=0.0, le=1.0, description="warn when test accuracy is below this")
    robustness: RobustnessParams = RobustnessParams()


class ReportParams(_Strict):
    grid_samples: int = Field(default=16, ge=0, le=256)


class RunnerParams(_Strict):
    """Where the Prefect flow runs the branches' shard tasks. Not a stage param: it never changes a byte of
    the outputs (DVC does not track it, and `augdag compare` leaves it out of its params hash)."""

    kind: Literal["local", "dask"] = Field(
        default="local", description="local: threads in this process | dask: Prefect tasks on Dask (prefect-dask)")
    address: str | None = Field(
        default=None,
        description="a running Dask scheduler, e.g. tcp://10.0.0.5:8786; null = a LocalCluster for the run")
    n_workers: int = Field(default=2, ge=1, le=1024, description="LocalCluster worker processes (address null)")
    chunk_size: int = Field(default=512, ge=1, le=1_000_000, description="samples per shard task of a branch")


class DeviceParams(_Strict):
    """Where the model stages compute (augdag/device.py). A stage's own key, when set, overrides `default`."""

    default: DeviceSpec = Field(default="cpu", description="auto = a GPU when torch sees one, else the CPU")
    generative: DeviceSpec | None = None
    crossdomain: DeviceSpec | None = None
    quality: DeviceSpec | None = None
    finetune: DeviceSpec | None = None
    evaluate: DeviceSpec | None = None
    mixed_precision: bool = Field(default=False, description="autocast (bf16, else fp16) in fine-tune and evaluate "
                                                             "on a GPU; the CPU always computes in float32")


class NumericsParams(_Strict):
    """One numerical path on every x86-64 CPU (augdag/numerics.py, docs/determinism.md)."""

    pin_kernels: bool = Field(default=True, description="cap torch, MKL, oneDNN, OpenBLAS, numpy and numba at AVX2 "
                                                          "so the bytes repeat on any CPU; false = this CPU's "
                                                          "fastest kernels, and bytes that depend on it")
    threads: int = Field(default=2, ge=1, le=256, description="torch threads of a stage (fine-tune and evaluate: "
                                                               "finetune.num_threads)")


class Params(_Strict):
    seed: int = Field(default=0, ge=0, lt=2**63)
    modality: Literal["image", "text", "audio"] = Field(
        default="image", description="image: the image sections below | text: the `text` section (docs/text.md) | "
                                     "audio: the `audio` section, spectrograms through the image stages "
                                     "(docs/audio.md)")
    runner: RunnerParams = RunnerParams()
    device: DeviceParams = DeviceParams()
    numerics: NumericsParams = NumericsParams()
    ingest: IngestParams = IngestParams()
    strategy: StrategyParams = StrategyParams()
    traditional: TraditionalParams = TraditionalParams()
    mix: MixParams = MixParams()
    generative: GenerativeParams = GenerativeParams()
    crossdomain: CrossdomainParams = CrossdomainParams()
    quality: QualityParams = QualityParams()
    merge: MergeParams = MergeParams()
    finetune: FinetuneParams = FinetuneParams()
    evaluate: EvaluateParams = EvaluateParams()
    report: ReportParams = ReportParams()
    text: TextParams = TextParams()
    audio: AudioParams = AudioParams()

    @model_validator(mode="after")
    def _crossdomain_needs_target(self):
        if self.strategy.crossdomain.enabled and self.modality == "image" and not self.crossdomain.target:
            raise ValueError("strategy.crossdomain.enabled needs crossdomain.target (a folder of unlabelled "
                             "target-domain images)")
        if self.strategy.crossdomain.multiplier > 1:
            raise ValueError(f"strategy.crossdomain.multiplier = {self.strategy.crossdomain.multiplier}: a translation "
                             "is deterministic, one per source image: use 0 or 1")
        if self.strategy.crossdomain.enabled and self.modality != "image":
            raise ValueError(f"strategy.crossdomain translates images; it is not available with modality: "
                             f"{self.modality}")
        return self


_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxlevel = 120, 120, 8, 8, 3


def _format(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid params"]
    errors = err.errors()
    if len(errors) > 30:
        lines.append(f"  ({len(errors)} problems; the first 30:)")
    for e in errors[:30]:
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (check the spelling; see params.yaml for the allowed keys)")
            continue
        got = _SHORT.repr(e.get("input"))  # bounded: a value can be huge (or a YAML alias bomb)
        got = got if len(got) <= 200 else got[:200] + "..."
        lines.append(f"  {key} = {got}: {e['msg']}")
    return "\n".join(lines)


def parse_params(data: Any, source: str = "params.yaml") -> Params:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: the top level must be a mapping of stage sections, got {type(data).__name__}")
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        raise ParamsError(_format(err, source)) from None
    except RecursionError:
        raise ParamsError(f"{source}: invalid params: nested too deeply") from None


def read_yaml(path: str | Path) -> Any:
    """The parsed params file; ParamsError naming it when it is missing, not a file, not UTF-8 or not YAML."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: params file not found")
    if not path.is_file():
        raise ParamsError(f"{path}: not a regular file")  # a folder, or a FIFO that would block the read
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ParamsError(f"{path}: not UTF-8 text: {err}") from None
    except OSError as err:
        raise ParamsError(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    except RecursionError:
        raise ParamsError(f"{path}: not valid YAML: nested too deeply") from None


def load_params(path: str | Path = "params.yaml", overrides: dict | None = None) -> Params:
    path = Path(path)
    data = read_yaml(path)
    if overrides:
        data = deep_merge(data or {}, overrides)
    return parse_params(data, str(path))


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def dotted_to_nested(pairs: list[str]) -> dict:
    """`['traditional.ops.rotation.degrees=20']` -> nested dict, values parsed as YAML scalars."""
    out: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise ParamsError(f"override {pair!r}: expected KEY=VALUE, e.g. finetune.steps=100")
        key, raw = pair.split("=", 1)
        node = out
        parts = key.strip().split(".")
        if not all(parts):
            raise ParamsError(f"override {pair!r}: empty key part in {key.strip()!r}; keys look like finetune.steps")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ParamsError(f"override {pair!r}: {part!r} is given a value by another override, so it "
                                  "cannot also hold keys")
        try:
            value = yaml.safe_load(raw)
        except (yaml.YAMLError, RecursionError) as err:
            raise ParamsError(f"override {pair!r}: the value is not a YAML scalar or list: "
                              f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
        if isinstance(value, str) and value == raw.strip() and _NUMBER.fullmatch(value):
            value = float(value)  # YAML 1.1 reads 2e-7 (no dot) as a string
        node[parts[-1]] = value
    return out


def set_file_overrides(path: str | Path) -> list[str]:
    """A partial params file (e.g. configs/gpu-224.yaml) as KEY=VALUE overrides, in its order."""
    import json

    data = read_yaml(path)
    if not isinstance(data, dict) or not data:
        raise ParamsError(f"{path}: a params set must be a non-empty mapping of params.yaml sections")
    out: list[str] = []

    def walk(node: dict, prefix: str) -> None:
        for k, v in node.items():
            if isinstance(v, dict) and v:
                walk(v, f"{prefix}{k}.")
            else:
                out.append(f"{prefix}{k}={json.dumps(v)}")  # JSON is YAML: the override parser reads it back

    walk(data, "")
    return out


def _represent_float(representer, value: float):
    """Floats in a form YAML 1.1 readers (PyYAML, which reads params.yaml) take as floats: 1e-05 is a
    string there, 1.0e-05 a float."""
    text = repr(value)
    if "e" in text and "." not in text.split("e")[0]:
        text = text.replace("e", ".0e", 1)
    elif text in ("inf", "-inf", "nan"):
        text = {"inf": ".inf", "-inf": "-.inf", "nan": ".nan"}[text]
    return representer.represent_scalar("tag:yaml.org,2002:float", text)


def _represent_str(representer, value: str):
    """A string quoted where YAML 1.1 readers would take it plain as something else: off, yes, 1.5, null."""
    plain = yaml.resolver.Resolver().resolve(yaml.ScalarNode, value, (True, False))
    style = "'" if plain != "tag:yaml.org,2002:str" else None
    return representer.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def write_overrides(path: str | Path, overrides: dict) -> Params:
    """Validate `overrides` on top of params.yaml, then write them into it (comments kept)."""
    from ruamel.yaml import YAML

    from augdag.storage import write_text

    path = Path(path)
    current = read_yaml(path) if path.exists() else {}
    if not isinstance(current or {}, dict):
        raise ParamsError(f"{path}: the top level must be a mapping of stage sections, got {type(current).__name__}")
    params = parse_params(deep_merge(current or {}, overrides), f"{path} (with overrides)")
    ry = YAML()
    ry.preserve_quotes = True
    ry.representer.add_representer(float, _represent_float)
    ry.representer.add_representer(str, _represent_str)
    # Keep the user's file as it was written: no re-wrapping of long flow mappings, nulls spelt null.
    ry.width = 4096
    ry.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    doc = ry.load(path.read_text(encoding="utf-8")) if path.exists() else None
    if doc is None:
        doc = {}

    def put(node, extra):
        for k, v in extra.items():
            if isinstance(v, dict) and isinstance(node.get(k), dict):
                put(node[k], v)
            else:
                node[k] = v

    put(doc, overrides)
    buf = io.StringIO()
    ry.dump(doc, buf)
    if parse_params(yaml.safe_load(buf.getvalue()), str(path)) != params:  # as params.yaml is read back
        raise ParamsError(f"{path}: the overrides would not read back as written: {overrides}")
    write_text(path, buf.getvalue())  # atomic; a full disk raises StorageError and leaves params.yaml as it was
    return params
