"""Consistency training (FixMatch) on ingest's unlabelled split: the pool is drawn apart from train, val and
test; the loss masks unconfident images; the fine-tune uses the unlabelled images and never their labels."""

import hashlib
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from augdag.consistency import unlabelled_loss, weak_view
from augdag.errors import DataError
from augdag.params import deep_merge, parse_params
from augdag.storage import read_manifest
from augdag.tasks import run_stage
from helpers import SMALL, image_folder


def test_the_loss_counts_only_confident_images_and_trains_towards_the_weak_views_class():
    weak = torch.tensor([[10.0, 0.0, 0.0], [0.1, 0.0, 0.0]])  # confident class 0; unconfident
    strong = torch.zeros(2, 3, requires_grad=True)
    loss, rate = unlabelled_loss(weak, strong, threshold=0.95)
    assert rate == 0.5
    assert float(loss) == pytest.approx(np.log(3) / 2)  # CE of a uniform guess for the one confident image, / 2
    loss.backward()
    assert strong.grad[0, 0] < 0 and float(strong.grad[1].abs().sum()) == 0.0  # only image 0, towards class 0
    none, rate = unlabelled_loss(torch.zeros(2, 3), strong, threshold=0.95)
    assert rate == 0.0 and float(none) == 0.0


def test_the_weak_view_is_a_seeded_shift_without_flips():
    x = torch.zeros(4, 16, 16, 1, dtype=torch.uint8)
    x[:, 6:10, 2:6] = 255
    a, b = weak_view(x, 0, 1), weak_view(x, 0, 1)
    assert torch.equal(a, b) and not torch.equal(a, weak_view(x, 0, 2))
    assert all(int(img.sum()) <= int(x[0].sum()) for img in a)  # shifted, maybe partly out of frame: never more
    assert not torch.equal(a, x)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    base = tmp_path_factory.mktemp("consistency")
    data = image_folder(base / "dataset", per_class=10)
    over = deep_merge(SMALL, {
        "ingest": {"source": str(data), "image_size": 16, "n_per_class": 2, "n_val_per_class": 1,
                   "n_test_per_class": 3, "n_unlabelled_per_class": 3},
        "strategy": {"mix": {"enabled": False}, "generative": {"enabled": False}},
        "finetune": {"pretrained": False, "steps": 3, "eval_every": 3, "image_size": 16, "batch_size": 4,
                     "online_mix": {"enabled": False},
                     "consistency": {"enabled": True, "threshold": 0.3, "ratio": 2}},
    })
    root = base / "project"
    p = parse_params(over)
    for stage in ("ingest", "strategy", "traditional", "mix", "generative", "crossdomain", "quality", "merge"):
        run_stage(stage, p, root)
    return root, p


def _model_digest(root):
    return hashlib.sha256((root / "data" / "finetune" / "model.safetensors").read_bytes()).hexdigest()


def test_the_unlabelled_pool_is_apart_from_train_val_and_test(project):
    root, p = project
    m = read_manifest(root / "data" / "ingest")
    counts = m.split.value_counts().to_dict()
    assert counts == {"train": 6, "val": 3, "test": 9, "unlabelled": 9}
    assert m.sample_id.is_unique  # no image in two splits
    strategy_parents = set(pd.read_json(root / "data" / "strategy" / "traditional.json", typ="series")["parents"])
    assert strategy_parents == set(m.sample_id[m.split == "train"])  # the branches see only the labelled train split


def test_finetune_learns_from_the_unlabelled_images_but_never_reads_their_labels(project, tmp_path):
    root, p = project
    run_stage("finetune", p, root)
    summary = pd.read_json(root / "data" / "finetune" / "summary.json", typ="series")
    assert 0.0 <= summary["pseudo_label_rate"] <= 1.0
    with_pool = _model_digest(root)
    run_stage("finetune", p, root)
    assert _model_digest(root) == with_pool  # the same bytes again

    # The same project with the unlabelled images' labels scrambled: the same model, to the byte.
    other = tmp_path / "scrambled"
    shutil.copytree(root, other)
    m = read_manifest(other / "data" / "ingest")
    unl = m.split == "unlabelled"
    m.loc[unl, "label"] = np.roll(m.loc[unl, "label"].to_numpy(), 1)
    m.to_parquet(other / "data" / "ingest" / "manifest.parquet", index=False)
    run_stage("finetune", p, other)
    assert _model_digest(other) == with_pool

    # Without consistency training the model differs: the unlabelled images did take part.
    run_stage("finetune", parse_params(deep_merge(p.model_dump(mode="json"),
                                                  {"finetune": {"consistency": {"enabled": False}}})), other)
    assert _model_digest(other) != with_pool


def test_consistency_without_an_unlabelled_pool_is_refused(tmp_path):
    data = image_folder(tmp_path / "dataset", per_class=10)
    over = deep_merge(SMALL, {
        "ingest": {"source": str(data), "image_size": 16, "n_per_class": 2, "n_val_per_class": 1,
                   "n_test_per_class": 3},
        "strategy": {"mix": {"enabled": False}, "generative": {"enabled": False}},
        "finetune": {"pretrained": False, "steps": 1, "image_size": 16, "consistency": {"enabled": True}},
    })
    p = parse_params(over)
    for stage in ("ingest", "strategy", "traditional", "mix", "generative", "crossdomain", "quality", "merge"):
        run_stage(stage, p, tmp_path / "project")
    with pytest.raises(DataError, match="n_unlabelled_per_class"):
        run_stage("finetune", p, tmp_path / "project")
