"""One numerical path on every x86-64 CPU: the libraries under torch, numpy and numba pick their kernels by the
CPU they find (AVX-512 here, AVX2 there, AMX elsewhere), and float results differ in the last bits between
those kernels; through a generator's or a model's training the bits become a different experiment. `pin` caps
every one of them at AVX2 (x86-64-v3: every Intel since Haswell, every AMD since Zen), so the same params give
the same bytes on any such machine. The caps are environment variables the libraries read when they load, so
they are set before torch, numpy or numba is imported (the `augdag` command does it first thing); worker
processes inherit them. params.yaml's `numerics.pin_kernels: false` leaves each library its fastest kernels:
then the bytes depend on the CPU.
"""

from __future__ import annotations

import os
import sys

PINS = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own vectorised kernels
    "MKL_CBWR": "AVX2",  # MKL, torch's BLAS and LAPACK: conditional numerical reproducibility
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN, torch's convolutions
    "OPENBLAS_CORETYPE": "Haswell",  # the OpenBLAS of numpy and scipy
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # numpy's SIMD dispatch above AVX2
    "NUMBA_CPU_NAME": "haswell",  # numba's JIT target (the ops' and the gate's kernels)
    "OPENCV_CPU_DISABLE": "AVX512F,AVX512-SKX",  # OpenCV's dispatched kernels (the traditional branch's warp)
}
_LIBRARIES = ("torch", "numpy", "numba", "scipy", "cv2")
_state: dict = {"pinned": False, "late": []}


def pin(enabled: bool = True) -> None:
    """Set the caps (overriding what the environment had) when enabled; note libraries loaded too early."""
    if not enabled:
        _state.update(pinned=False, late=[])
        return
    inherited = all(os.environ.get(k) == v for k, v in PINS.items())  # a pinned parent: loaded under the caps
    os.environ.update(PINS)
    _state.update(pinned=True, late=[] if inherited else [m for m in _LIBRARIES if m in sys.modules])


def pin_from_params(root: str | os.PathLike = ".") -> None:
    """`pin` as the project's params.yaml says (numerics.pin_kernels, default true), reading it without
    importing anything heavy; a missing or broken file pins (the params error comes later, where it is read)."""
    import yaml

    try:
        with open(os.path.join(root, "params.yaml"), encoding="utf-8") as f:
            data = yaml.safe_load(f)
        enabled = data.get("numerics", {}).get("pin_kernels", True)
    except Exception:  # noqa: BLE001  validation, with its clear error, happens where the params are loaded
        enabled = True
    pin(enabled is not False)


def state() -> dict:
    """What a stage's summary records: whether the caps were set in time, and the kernel level torch uses."""
    import torch

    out = {"pinned": _state["pinned"] and not _state["late"], "aten": torch.backends.cpu.get_cpu_capability(),
           "threads": torch.get_num_threads()}
    if _state["pinned"] and _state["late"]:
        out["loaded_before_pin"] = list(_state["late"])
    return out


def check(p, log=None) -> None:
    """Warn when params ask for the pin but this process could not apply it (a library loaded first, or a CPU
    below AVX2), since the bytes then depend on the machine."""
    import torch

    if not p.numerics.pin_kernels:
        return
    msg = None
    if not _state["pinned"]:
        msg = "numerics.pin_kernels is true, but this process did not pin (run stages through the augdag command)"
    elif _state["late"]:
        msg = f"{', '.join(_state['late'])} loaded before the kernel caps were set; their kernels follow this CPU"
    elif torch.backends.cpu.get_cpu_capability() != "AVX2":
        msg = f"this CPU runs torch at {torch.backends.cpu.get_cpu_capability()}, below the pinned AVX2"
    if msg:
        from augdag.log import logger

        (log or logger()).warning("numerics: %s: outputs may differ from a pinned run's bytes", msg)
