"""Where the model stages compute: params' `device` section resolved to a `torch.device`.

`cpu` is the default because the committed `dvc.lock` is made there; a GPU gives outputs of its own (other
kernels, other bits), recorded in each model stage's summary so a run says where it computed.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

import torch

from augdag.errors import ParamsError

if TYPE_CHECKING:
    from augdag.params import Params

STAGES = ("generative", "crossdomain", "quality", "finetune", "evaluate")


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve(spec: str, key: str = "device.default") -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps' -> a device torch can use here; ParamsError naming `key` if not."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    try:
        dev = torch.device(spec)
    except RuntimeError as err:
        raise ParamsError(f"params.yaml: {key} = {spec!r}: {err}; allowed: auto, cpu, cuda, cuda:N, mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ParamsError(f"params.yaml: {key} = {spec!r}: torch sees no CUDA GPU here (torch "
                              f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}); use cpu, or auto to "
                              "take a GPU when present")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ParamsError(f"params.yaml: {key} = {spec!r}: this machine has {count} CUDA device(s), "
                              f"cuda:0..cuda:{count - 1}")
        return torch.device("cuda", dev.index if dev.index is not None else torch.cuda.current_device())
    if dev.type == "mps" and not _mps_available():
        raise ParamsError(f"params.yaml: {key} = {spec!r}: torch's MPS backend is not available here; use cpu or auto")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ParamsError(f"params.yaml: {key} = {spec!r}: allowed: auto, cpu, cuda, cuda:N, mps")
    return dev


def for_stage(p: Params, stage: str) -> torch.device:
    """The device of a model stage: its own key in params' device section, else device.default."""
    if stage not in STAGES:
        raise ValueError(f"{stage!r} is not a model stage; model stages: {', '.join(STAGES)}")
    own = getattr(p.device, stage)
    dev = resolve(own, f"device.{stage}") if own is not None else resolve(p.device.default, "device.default")
    prepare(dev)
    return dev


def prepare(dev: torch.device) -> None:
    """On a GPU, the deterministic kernels (the same bytes run to run on one card and software stack)."""
    if dev.type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS reads it at its first call
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


def describe(dev: torch.device) -> dict:
    """{"device": "cpu", "numerics": ...} or {"device": "cuda:0", "device_name": "NVIDIA H100 80GB HBM3"}: for
    summaries (on the CPU with the kernel caps augdag.numerics set)."""
    out: dict = {"device": str(dev)}
    if dev.type == "cuda":
        out["device_name"] = torch.cuda.get_device_name(dev)
    if dev.type == "cpu":
        from augdag import numerics

        out["numerics"] = numerics.state()
    return out


class Precision:
    """Mixed precision for a training or inference loop: autocast to bf16 (fp16 with loss scaling where the
    GPU lacks bf16) when enabled on a GPU; float32, and no change at all, everywhere else."""

    def __init__(self, dev: torch.device, enabled: bool):
        self.dtype = None
        if enabled and dev.type == "cuda":
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self):
        return torch.autocast("cuda", dtype=self.dtype) if self.dtype is not None else contextlib.nullcontext()

    def step(self, loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        """backward and optimiser step (scaled for fp16)."""
        if self.scaler is None:
            loss.backward()
            opt.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(opt)
        self.scaler.update()


def for_replay(recorded: str | None, stage: str) -> torch.device:
    """The device a stage's samples were made on, to redraw them there; the CPU (with a warning) when this
    machine lacks it, as the same model on other kernels may give other bytes."""
    if recorded in (None, "cpu"):
        return torch.device("cpu")
    try:
        return resolve(recorded, f"{stage}'s recorded device")
    except ParamsError:
        from augdag.log import logger

        logger().warning("replay: %s made its samples on %s, which this machine lacks; replaying on the CPU, whose "
                         "kernels may give other bytes than the recorded hash", stage, recorded)
        return torch.device("cpu")
