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


def test_the_digits_folder_is_a_dataset_ingest_reads(tmp_path):
    """examples/digits_folder.py: scikit-learn's digits as a user-style folder, read by the ingest stage."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from augdag.params import parse_params
    from augdag.storage import read_manifest
    from augdag.tasks import out_dir, run_stage

    spec = importlib.util.spec_from_file_location("digits_folder", REPO / "examples" / "digits_folder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    counts = module.write_folder(tmp_path / "digits")
    digits = load_digits()
    assert counts == {str(k): int((digits.target == k).sum()) for k in range(10)}
    first = np.asarray(Image.open(tmp_path / "digits" / str(digits.target[7]) / "0007.png"))
    assert first.shape == (8, 8) and (first == np.round(digits.images[7] * 255 / 16)).all()
    p = parse_params({"ingest": {"source": str(tmp_path / "digits"), "n_test_per_class": 100,
                                 "n_unlabelled_per_class": 30}})
    run_stage("ingest", p, tmp_path / "proj")
    m = read_manifest(out_dir(tmp_path / "proj", "ingest"))
    assert m.groupby("split").size().to_dict() == {"test": 1000, "train": 200, "unlabelled": 300, "val": 200}
