"""examples/train_your_own.py, the loop a user copies: a few steps on a small project's merged set."""

import importlib.util
import math

import numpy as np
import torch

from augdag.storage import StageWriter, write_json
from helpers import REPO


def _example():
    spec = importlib.util.spec_from_file_location("train_your_own", REPO / "examples" / "train_your_own.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stage(folder, n, split, rng, weights=False):
    w = StageWriter(folder, shard_size=16)
    for i in range(n):
        label = i % 3
        img = (rng.random((28, 28, 1)) * 60).astype(np.uint8)
        img[4 + 6 * label: 10 + 6 * label, 4:24] = 220  # a bar whose height is the class
        mixed = weights and i % 5 == 4
        w.add(img, sample_id=f"{split}{i}" + ("~mix0" if mixed else ""), split=split, branch="mix" if mixed else "raw",
              label=label, soft_label=[0.6, 0.4, 0.0] if mixed else None, parent_ids=[], source="x",
              weight=1.0 / n if weights else None)
    w.close()


def test_the_example_trains_a_timm_model_on_the_merged_set_and_scores_the_test_split(tmp_path, capsys):
    rng = np.random.default_rng(0)
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    write_json(tmp_path / "data" / "ingest" / "classes.json", {"classes": ["top", "middle", "bottom"]})
    _stage(tmp_path / "data" / "ingest", 12, "test", rng)
    _stage(tmp_path / "data" / "merge", 20, "train", rng, weights=True)
    example = _example()
    before = example.build_model("efficientnet_lite0", num_classes=3).state_dict()
    out = example.main(["--root", str(tmp_path), "--steps", "3", "--batch-size", "4", "--image-size", "32",
                        "--workers", "0"])
    assert math.isfinite(out["loss"]) and 0.0 <= out["accuracy"] <= 1.0
    after = out["model"].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())
    assert "test accuracy" in capsys.readouterr().out
