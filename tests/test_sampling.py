"""Per-source sampling in the fine-tune (static, uniform, dynamic), online TrivialAugmentWide, extra source folders."""

import csv
import hashlib
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from augdag.errors import DataError
from augdag.params import SamplingParams, deep_merge, parse_params
from augdag.storage import read_manifest
from augdag.tasks import run_stage
from augdag.tasks.finetune import SourceSampler, online_augment
from helpers import SMALL, image_folder

SOURCES = np.array(["raw"] * 6 + ["traditional"] * 3 + ["mix"] * 1)
STATIC = np.array([1 / 3 / 6] * 6 + [1 / 3 / 3] * 3 + [1 / 3] * 1)


def test_static_and_uniform_per_sample_weights():
    static = SourceSampler(SOURCES, STATIC, SamplingParams(mode="static"), 0)
    assert torch.equal(static.weights(), torch.as_tensor(STATIC))
    uniform = SourceSampler(SOURCES, STATIC, SamplingParams(mode="uniform"), 0)
    assert torch.equal(uniform.weights(), torch.ones(10, dtype=torch.float64))
    uniform.record(0)
    assert uniform.final() == {"raw": 0.6, "traditional": 0.3, "mix": 0.1}
    assert uniform.trajectory[0] == {"step": 0, "source": "raw", "weight": 0.6, "feedback": None}


def test_dynamic_starts_from_the_static_masses_and_applies_the_update_rule():
    s = SourceSampler(SOURCES, STATIC, SamplingParams(mode="dynamic", eta=0.5, w_min=0.05), 0)
    assert np.allclose(s.w, [1 / 3] * 3)
    per_sample = s.weights().numpy()
    assert np.isclose(per_sample[:6].sum(), 1 / 3) and np.isclose(per_sample[9], 1 / 3)
    s.apply_feedback({"raw": 0.6, "traditional": 0.3, "mix": -0.6}, step=5)
    # mean 0.1: raw 1/3 + 0.25, traditional 1/3 + 0.1, mix max(1/3 - 0.35, 0.05) = 0.05; then normalised
    raw, trad, mix = 1 / 3 + 0.25, 1 / 3 + 0.1, 0.05
    assert np.allclose(s.w, np.array([raw, trad, mix]) / (raw + trad + mix))
    assert np.isclose(s.weights().numpy().sum(), 1.0)
    rows = [r for r in s.trajectory if r["step"] == 5]
    assert [r["source"] for r in rows] == ["raw", "traditional", "mix"] and rows[2]["feedback"] == -0.6
    assert np.isclose(sum(s.final().values()), 1.0)


def _images(n, size, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    x = rng.integers(0, 60, (n, size, size, 1))
    x[labels == 1, : size // 2] += 150  # class 1: bright top half
    return torch.as_tensor(x.astype(np.uint8)), torch.as_tensor(labels)


def test_feedback_favours_the_source_that_agrees_with_validation():
    """A clean source's gradient points where validation's does; a label-shuffled one's does not."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    x, labels = _images(64, 8, 1)
    y = torch.nn.functional.one_hot(torch.cat([labels[:32], 1 - labels[32:]]), 2).float()  # second half: flipped labels
    xv, yv = _images(32, 8, 2)
    sources = np.array(["clean"] * 32 + ["flipped"] * 32)
    s = SourceSampler(sources, np.full(64, 1 / 64), SamplingParams(mode="dynamic", feedback_batch=32), 0)
    model.train()
    feedback = s.update(model, x, y, xv, yv, image_size=8, step=1)
    assert feedback["clean"] > 0.5 > -0.5 > feedback["flipped"]
    assert s.w[0] > s.w[1] and model.training  # the mode is restored
    assert all(q.grad is None for q in model.parameters())


@pytest.mark.parametrize("policy", ["trivial_augment_wide", "randaugment", "augmix"])
def test_online_policies_are_seeded_and_leave_the_global_rng_alone(policy):
    x, _ = _images(16, 12, 3)
    assert online_augment(x, "none", 0, 1) is x
    state = torch.get_rng_state()
    a, b = online_augment(x, policy, 0, 1), online_augment(x, policy, 0, 1)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and a.shape == x.shape and a.dtype == torch.uint8
    assert not torch.equal(a, x)
    assert not torch.equal(a, online_augment(x, policy, 0, 2))


CLASSES = ("circle", "square", "bar")


@pytest.fixture(scope="module")
def folder_project(tmp_path_factory):
    base = tmp_path_factory.mktemp("sampling")
    data, extra = image_folder(base / "dataset"), image_folder(base / "extra", per_class=2, size=14)
    over = deep_merge(SMALL, {
        "ingest": {"source": str(data), "image_size": 16},
        "strategy": {"mix": {"enabled": False}, "generative": {"enabled": False}},
        "merge": {"extra_sources": {"web": str(extra)}, "weights": {"web": 0.5}},
        "finetune": {"pretrained": False, "steps": 4, "eval_every": 2, "image_size": 16,
                     "online_mix": {"enabled": False},
                     "sampling": {"mode": "dynamic", "every": 2, "feedback_batch": 4}},
        "evaluate": {"robustness": {"enabled": False}},
    })
    root = base / "project"
    p = parse_params(over)
    for stage in ("ingest", "strategy", "traditional", "mix", "generative", "crossdomain", "quality", "merge"):
        run_stage(stage, p, root)
    return root, over, extra


def test_extra_source_folder_joins_the_merged_set(folder_project):
    root, over, extra = folder_project
    merged = read_manifest(root / "data" / "merge")
    web = merged[merged.branch == "web"]
    assert len(web) == 2 * len(CLASSES)
    assert set(web.sample_id) == {f"web/{c}/img{i:02d}.{'jpg' if i % 3 == 0 else 'png'}"
                                  for c in CLASSES for i in (0, 1)}
    assert all(src.startswith(str(extra)) for src in web.source) and (web.gate == "not gated").all()
    assert sorted(web.label) == [0, 0, 1, 1, 2, 2]  # each class folder mapped to the raw classes' index
    total = {"raw": 1.0, "traditional": 1.0, "web": 0.5}
    assert np.isclose(web.weight.sum(), 0.5 / sum(total.values()))


def test_extra_source_with_an_unknown_class_is_refused(folder_project, tmp_path):
    root, over, extra = folder_project
    bad = tmp_path / "bad"
    shutil.copytree(extra, bad)
    (bad / "circle").rename(bad / "triangle")
    before = (root / "data" / "merge" / "manifest.parquet").read_bytes()
    with pytest.raises(DataError, match=r"merge\.extra_sources\.web = .*bad: class folders \['triangle'\]"):
        run_stage("merge", parse_params(deep_merge(over, {"merge": {"extra_sources": {"web": str(bad)}}})), root)
    assert (root / "data" / "merge" / "manifest.parquet").read_bytes() == before  # the last good output stays


def test_dynamic_finetune_records_its_weight_trajectory_reproducibly(folder_project, tmp_path):
    root, over, _ = folder_project
    p = parse_params(over)
    digest = lambda: {n: hashlib.sha256((root / "data" / "finetune" / n).read_bytes()).hexdigest()
                      for n in ("model.safetensors", "weights.csv")}
    s1 = run_stage("finetune", p, root)
    first = digest()
    with open(root / "data" / "finetune" / "weights.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["source"]) for r in rows] == [(st, src) for st in ("0", "2")
                                                        for src in ("raw", "traditional", "web")]
    start = {r["source"]: float(r["weight"]) for r in rows if r["step"] == "0"}
    assert start == {"raw": 0.4, "traditional": 0.4, "web": 0.2}  # merge.weights 1 : 1 : 0.5
    assert all(r["feedback"] == "" for r in rows[:3]) and all(-1 <= float(r["feedback"]) <= 1 for r in rows[3:])
    final = s1["sampling"]["final_weights"]
    assert s1["sampling"]["mode"] == "dynamic" and s1["sampling"]["updates"] == 1
    assert np.isclose(sum(final.values()), 1.0, atol=1e-5) and final != start  # the feedback moved them
    run_stage("finetune", p, root)
    assert digest() == first
    static = run_stage("finetune", parse_params(deep_merge(over, {"finetune": {"sampling": {"mode": "static"}}})), root)
    assert static["sampling"]["updates"] == 0
    assert len((root / "data" / "finetune" / "weights.csv").read_text().splitlines()) == 4
    assert digest()["model.safetensors"] != first["model.safetensors"]


def test_dynamic_sampling_needs_a_validation_split(folder_project):
    root, over, _ = folder_project
    p = parse_params(deep_merge(over, {"ingest": {"n_val_per_class": 0}}))
    with pytest.raises(DataError, match="n_val_per_class"):
        _run_without_val(p, root)


def _run_without_val(p, root):
    """The merged set as it is, but an ingest manifest with no val rows (what n_val_per_class: 0 gives)."""
    import shutil as sh

    work = root.parent / "noval"
    if work.exists():
        sh.rmtree(work)
    sh.copytree(root / "data", work / "data")
    m = read_manifest(work / "data" / "ingest")
    m = m[m.split != "val"]
    from augdag.storage import write_manifest

    write_manifest(work / "data" / "ingest" / "manifest.parquet", m)
    run_stage("finetune", p, work)


def test_adversarial_finetune_is_reproducible_and_changes_training(folder_project):
    root, over, _ = folder_project
    base = deep_merge(over, {"finetune": {"sampling": {"mode": "static"}, "steps": 2}})
    model = root / "data" / "finetune" / "model.safetensors"
    run_stage("finetune", parse_params(base), root)
    plain = model.read_bytes()
    adv = deep_merge(base, {"finetune": {"adversarial": {"enabled": True, "epsilon": 0.1, "random_start": True},
                                         "online_mix": {"enabled": True}}})
    first = run_stage("finetune", parse_params(adv), root)
    adv_bytes = model.read_bytes()
    second = run_stage("finetune", parse_params(adv), root)
    assert model.read_bytes() == adv_bytes and first == second
    assert adv_bytes != plain
