"""What several test files share: the scratch project, the small params, a user-style image folder, the check
that an interrupted command left the project consistent."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from augdag import runlock

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# What a stage's cmd and deps need, copied into a scratch project so tests never touch the repo's data/.
PROJECT_FILES = ["dvc.yaml", "params.yaml", "tasks", "augdag", "expectations", "flows", ".dvcignore"]

SMALL = {
    "ingest": {"n_per_class": 2, "n_val_per_class": 1, "n_test_per_class": 3},
    "strategy": {"mix": {"enabled": True, "multiplier": 1}, "generative": {"enabled": True, "multiplier": 1}},
    "generative": {"model": {"steps": 5, "batch_size": 8, "width": 8, "latent_dim": 4}},
    "finetune": {"steps": 3, "batch_size": 7, "image_size": 32, "eval_every": 2, "online_mix": {"enabled": True}},
    "report": {"grid_samples": 4},
}


def run(cmd, cwd, check=True, env=None, **kw):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **(env or {})}
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"{cmd} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


def make_project(dest: Path, overrides: dict | None = None) -> Path:
    """A scratch copy of the project (git + dvc initialised), params merged with `overrides`."""
    import yaml

    from augdag.params import deep_merge

    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    (dest / "params.yaml").write_text(yaml.safe_dump(deep_merge(params, overrides or {}), sort_keys=False))
    run(["git", "init", "-q"], dest)
    run(["dvc", "init", "-q"], dest)
    shutil.copytree(REPO / ".dvc" / "plots", dest / ".dvc" / "plots", dirs_exist_ok=True)  # dvc.yaml's plot templates
    run(["dvc", "config", "core.analytics", "false"], dest)
    run(["dvc", "config", "core.check_update", "false"], dest)
    return dest


def image_folder(root: Path, classes=("circle", "square", "bar"), per_class=6, size=20, mode="L") -> Path:
    """A user-style dataset: one subfolder per class of small real PNG/JPEG images."""
    rng = np.random.default_rng(0)
    for ci, name in enumerate(classes):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = (rng.random((size + i, size + 2 * i)) * 60).astype(np.uint8)
            a[size // 4: size // 2 + ci * 3, size // 4: size // 2 + i] = 200 + ci * 20
            im = Image.fromarray(a).convert(mode)
            im.save(d / f"img{i:02d}.{'jpg' if i % 3 == 0 else 'png'}")
    return root


def assert_consistent(proj: Path) -> None:
    """No half-written output, the run lock free, every output on disk what dvc.lock records."""
    left = [str(p) for p in (proj / "data").rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]
    assert not left, f"half-written outputs left: {left}"
    with runlock.hold(proj, "test"):  # raises RunLocked if the interrupted command still held it
        pass
    res = run([str(BIN / "dvc"), "status", "--json"], proj)
    status = json.loads(res.stdout or "{}")
    changed_outs = {stage: e["changed outs"] for stage, entries in status.items() for e in entries
                    if isinstance(e, dict) and "changed outs" in e}
    assert not changed_outs, f"outputs on disk differ from dvc.lock: {changed_outs}"


def crossdomain_overrides(root: Path, classes=("Trouser", "Bag")) -> dict:
    """Params overrides that turn the crossdomain branch on with a tiny CycleGAN, after writing a target domain
    under `root`: unlabelled images (bright strokes on a dark ground, no class folders) and a labelled test folder
    with a subfolder per name in `classes` (raw class names, '/' spelled '_')."""
    rng = np.random.default_rng(1)
    unlabelled, test = root / "target-unlabelled", root / "target-test"
    for i in range(12):
        folder = unlabelled / ("a" if i % 2 else "b")  # subfolders are allowed, and carry no label
        folder.mkdir(parents=True, exist_ok=True)
        a = np.zeros((10, 10), np.uint8)
        a[2 + i % 4:7, 3:4 + i % 5] = 255
        Image.fromarray(a).save(folder / f"t{i:02d}.png")
    for ci, name in enumerate(classes):
        (test / name).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            Image.fromarray((rng.random((12, 12)) * 255 * (ci + 1) / len(classes)).astype(np.uint8)).save(
                test / name / f"x{i}.png")
    return {"strategy": {"crossdomain": {"enabled": True, "multiplier": 1}},
            "crossdomain": {"target": str(unlabelled),
                            "model": {"steps": 4, "width": 4, "n_res": 1, "disc_width": 4, "batch_size": 4}},
            "evaluate": {"target_test": str(test)}}


def torch_threads(n: int):
    """A module-scoped autouse fixture that pins torch's thread count to `n` and restores it afterwards (float
    results, and so bytes, are promised at a given thread count):  fixed_threads = torch_threads(2)"""
    import pytest
    import torch

    @pytest.fixture(autouse=True, scope="module")
    def fixture():
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        yield
        torch.set_num_threads(before)

    return fixture
