"""One numerical path on every x86-64 CPU (augdag/numerics.py). A second machine is stood in for by the
environment variables through which each library picks its kernels: a machine with AVX-512 (this one's
defaults), one without AVX2's successors, one capped at AVX2."""

import hashlib
import os
import subprocess
import sys

import pytest
import yaml

from augdag import numerics
from augdag.params import deep_merge
from helpers import BIN, SMALL, make_project

MACHINES = {
    "native": {},
    "old": {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "SSE41",
            "OPENBLAS_CORETYPE": "Prescott", "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR",
            "NUMBA_CPU_NAME": "nehalem"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_the_generators_bytes_do_not_depend_on_the_kernels_the_machine_would_pick(tmp_path):
    """Pinned: the generator (convolutions through oneDNN, linear layers through MKL, torch's own kernels) and
    its samples are the same bytes under every stand-in machine. Unpinned: they are not (so this test can fail)."""
    root = make_project(tmp_path / "p", deep_merge(SMALL, {
        "generative": {"model": {"steps": 40}},
        "strategy": {"traditional": {"enabled": False}, "mix": {"enabled": False}}}))
    # the caps an in-process `augdag` call of another test may have set in this environment: a machine's own
    env = {**{k: v for k, v in os.environ.items() if k not in numerics.PINS}, "PATH": f"{BIN}:{os.environ['PATH']}"}

    def stage(name, extra=None):
        res = subprocess.run(["augdag", "stage", name], cwd=root, env={**env, **(extra or {})}, capture_output=True,
                             text=True)
        assert res.returncode == 0, res.stderr[-2000:]

    stage("ingest")
    stage("strategy")
    out = {}
    for pin in (True, False):
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["numerics"]["pin_kernels"] = pin
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        for machine, extra in MACHINES.items():
            stage("generative", extra)
            gen = root / "data" / "generative"
            out[pin, machine] = (_digest(gen / "generator.safetensors"), _digest(gen / "manifest.parquet"))
            summary = yaml.safe_load((gen / "summary.json").read_text())
            assert summary["numerics"]["pinned"] is pin
            if pin:
                assert summary["numerics"]["aten"] == "AVX2"
    assert out[True, "native"] == out[True, "old"] == out[True, "avx2"]
    assert out[True, "avx2"] == out[False, "avx2"]  # the pin is the AVX2 path, nothing else
    assert out[False, "native"] != out[False, "old"]


def test_pin_sets_every_cap_and_notes_libraries_loaded_before_it(monkeypatch):
    import numpy  # noqa: F401  loaded before the pin, as in a user's session that imported it first

    for k in numerics.PINS:
        monkeypatch.setenv(k, "something-else")
    before = dict(numerics._state)
    numerics.pin(True)
    try:
        assert {k: os.environ[k] for k in numerics.PINS} == numerics.PINS
        state = numerics.state()
        assert state["pinned"] is False and "numpy" in state["loaded_before_pin"]
    finally:
        numerics._state.update(before)  # conftest's pin, for the tests after this one


def test_pin_from_params_reads_the_switch_without_loading_torch(tmp_path):
    code = ("import os, sys; from augdag import numerics; numerics.pin_from_params(sys.argv[1]); "
            "print(os.environ.get('ATEN_CPU_CAPABILITY'), 'torch' in sys.modules, 'numpy' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in numerics.PINS}
    for text, want in (("numerics: {pin_kernels: false}\n", "None False False"),
                       ("numerics: {pin_kernels: true}\n", "avx2 False False"),
                       ("seed: 0\n", "avx2 False False"), ("{broken", "avx2 False False")):
        (tmp_path / "params.yaml").write_text(text)
        res = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True)
        assert res.stdout.strip() == want, (text, res.stderr)


def test_the_pin_turns_off_opencvs_avx512_kernels():
    """OpenCV picks its warp kernels by the CPU too (the traditional branch's one warp per sample); pinned, the
    AVX-512 ones are off and the AVX2 ones stay (the project's CPUs are x86-64-v3: AVX2 everywhere)."""
    code = "import cv2; print(*(cv2.checkHardwareSupport(f) for f in (13, 256, 11)))  # AVX512F, AVX512-SKX, AVX2"
    env = {k: v for k, v in os.environ.items() if k not in numerics.PINS}
    res = subprocess.run([sys.executable, "-c", code], env={**env, **numerics.PINS}, capture_output=True, text=True)
    assert res.stdout.split() == ["False", "False", "True"], res.stderr
    assert "unknown CPU feature" not in res.stderr, res.stderr
