"""FGSM / PGD on tiny models trained in a second on separable synthetic images, and the evaluate stage's
robustness metrics on a small scratch project."""

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from augdag.adversarial import fgsm, pgd, robust_accuracy, soft_ce, stratified_subset
from augdag.errors import ModelError
from augdag.models import normalize, preprocess, to_unit
from augdag.params import RobustnessParams, parse_params
from augdag.tasks import run_stage
from helpers import SMALL, torch_threads

K, S = 3, 8


one_thread = torch_threads(1)  # tiny models: one thread is faster and leaves the other cores alone


def synthetic(n_per_class: int, seed: int = 0):
    """uint8 N×S×S×1 images: noise plus a bright horizontal band whose position is the class."""
    g = np.random.default_rng(seed)
    labels = np.repeat(np.arange(K), n_per_class)
    images = (g.random((len(labels), S, S, 1)) * 80).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, 1 + 2 * c: 3 + 2 * c, :, 0] = 150 + g.integers(0, 100)
    return torch.from_numpy(images), labels


def train(model: nn.Module, images: torch.Tensor, labels: np.ndarray, steps: int = 60) -> nn.Module:
    torch.manual_seed(0)
    x, y = preprocess(images, S), torch.as_tensor(labels)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return model.eval()


def mlp() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * S * S, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.1),
                         nn.Linear(32, K))


@pytest.fixture(scope="module")
def trained():
    images, labels = synthetic(30)
    model = train(mlp(), images, labels)
    with torch.no_grad():
        acc = (model(preprocess(images, S)).argmax(1).numpy() == labels).mean()
    assert acc == 1.0, "the synthetic task must be learnt for the attack tests to mean anything"
    return model, images, labels


def per_sample_loss(model, x01, y):
    with torch.no_grad():
        return soft_ce(model(normalize(x01)), y, reduction="none")


def test_preprocess_is_normalize_of_to_unit_and_byte_identical_to_the_old_formula():
    def old(x, size):
        x = x.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        return ((x - 0.5) / 0.5).contiguous()

    g = torch.Generator().manual_seed(0)
    for c in (1, 3):
        for size in (16, 37, 64):
            img = torch.randint(0, 256, (3, 29, 41, c), dtype=torch.uint8, generator=g)
            u = to_unit(img, size)
            assert u.shape == (3, 3, size, size) and u.min() >= 0 and u.max() <= 1
            assert torch.equal(preprocess(img, size), old(img, size))
            assert torch.equal(normalize(u), old(img, size)) and preprocess(img, size).is_contiguous()
    with pytest.raises(ModelError, match=r"^preprocess: .*uint8 tensor N×H×W×C with C = 1 or 3"):
        preprocess(torch.zeros(1, 8, 8, 3), 8)
    with pytest.raises(ModelError, match=r"^to_unit: image_size must be an integer >= 1"):
        to_unit(torch.zeros(1, 8, 8, 3, dtype=torch.uint8), 0)


def test_soft_ce_of_one_hot_equals_hard_label_ce():
    logits = torch.randn(5, K, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 2, 1, 1, 0])
    assert torch.allclose(soft_ce(logits, y), F.cross_entropy(logits, y))
    assert torch.allclose(soft_ce(logits, F.one_hot(y, K).float()), F.cross_entropy(logits, y))
    soft = torch.full((5, K), 1 / K)
    assert torch.allclose(soft_ce(logits, soft, reduction="none"), -torch.log_softmax(logits, 1).mean(1))


@pytest.mark.parametrize("attack", ["fgsm", "fgsm_rs", "pgd"])
@pytest.mark.parametrize("eps", [0.03, 0.3])
def test_linf_bound_and_pixel_range(trained, attack, eps):
    model, images, labels = trained
    x, y = to_unit(images, S), torch.as_tensor(labels)
    x[:5] = 0.0  # corners of the pixel box: the clamp must bite
    x[5:10] = 1.0
    gen = torch.Generator().manual_seed(3)
    if attack == "pgd":
        adv = pgd(model, x, y, eps, steps=4, generator=gen)
    else:
        adv = fgsm(model, x, y, eps, random_start=attack == "fgsm_rs", generator=gen)
    assert adv.shape == x.shape and adv.dtype == x.dtype and not adv.requires_grad
    assert (adv - x).abs().max() <= eps + 1e-6
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    assert (adv - x).abs().max() > eps / 2, "the attack must actually move the input"


def test_fgsm_raises_the_loss_and_pgd_raises_it_further(trained):
    model, images, labels = trained
    x, y = to_unit(images, S), torch.as_tensor(labels)
    for eps in (0.05, 0.1, 0.2):
        clean = per_sample_loss(model, x, y)
        f = per_sample_loss(model, fgsm(model, x, y, eps), y)
        p = per_sample_loss(model, pgd(model, x, y, eps, steps=10, generator=torch.Generator().manual_seed(0)), y)
        assert f.mean() > clean.mean() * 1.5 and (f > clean).float().mean() > 0.9
        assert p.mean() >= f.mean()


def test_random_start_differs_and_is_reproducible(trained):
    model, images, labels = trained
    x, y = to_unit(images, S), torch.as_tensor(labels)

    def gen(s):
        return torch.Generator().manual_seed(s)

    plain = fgsm(model, x, y, 0.1)
    a = fgsm(model, x, y, 0.1, random_start=True, generator=gen(7))
    assert not torch.equal(a, plain)
    assert torch.equal(a, fgsm(model, x, y, 0.1, random_start=True, generator=gen(7)))
    assert not torch.equal(a, fgsm(model, x, y, 0.1, random_start=True, generator=gen(8)))
    p = pgd(model, x, y, 0.1, steps=3, generator=gen(7))
    assert torch.equal(p, pgd(model, x, y, 0.1, steps=3, generator=gen(7)))
    assert not torch.equal(p, pgd(model, x, y, 0.1, steps=3, generator=gen(8)))
    assert not torch.equal(p, pgd(model, x, y, 0.1, steps=3, random_start=False))
    # without a random start PGD is deterministic and needs no generator
    fixed = pgd(model, x, y, 0.1, steps=3, random_start=False)
    assert torch.equal(fixed, pgd(model, x, y, 0.1, steps=3, random_start=False))


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("with_grads", [False, True])
def test_attacks_leave_mode_and_parameter_grads_alone(trained, mode, with_grads):
    model, images, labels = trained
    x, y = to_unit(images[:16], S), torch.as_tensor(labels[:16])
    model.train(mode == "train")
    if with_grads:
        for i, q in enumerate(model.parameters()):
            q.grad = torch.full_like(q, float(i + 1))
    before = [None if q.grad is None else q.grad.clone() for q in model.parameters()]
    try:
        fgsm(model, x, y, 0.1, random_start=True, generator=torch.Generator().manual_seed(0))
        pgd(model, x, y, 0.1, steps=2, generator=torch.Generator().manual_seed(0))
        assert model.training == (mode == "train")
        assert all(m.training == (mode == "train") for m in model.modules())
        for q, b in zip(model.parameters(), before):
            assert (q.grad is None) if b is None else torch.equal(q.grad, b)
    finally:
        for q in model.parameters():
            q.grad = None
        model.eval()


def test_fgsm_on_a_linear_model_steps_along_the_sign_of_the_analytic_gradient():
    torch.manual_seed(0)
    lin = nn.Linear(3 * S * S, K)
    model = nn.Sequential(nn.Flatten(), lin).eval()
    g = torch.Generator().manual_seed(1)
    x = 0.25 + 0.5 * torch.rand(6, 3, S, S, generator=g)  # interior: eps = 0.1 is never clamped
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    # logits = W (2x - 1) + b, so d CE / dx = 2 Wᵀ (softmax - onehot)
    with torch.no_grad():
        p = torch.softmax(model(normalize(x)), 1)
        grad = (2 * (p - F.one_hot(y, K).float()) @ lin.weight).reshape(x.shape)
    step = fgsm(model, x, y, 0.1) - x
    sure = grad.abs() > 1e-6 * grad.abs().max()
    assert sure.float().mean() > 0.99
    assert torch.allclose(step[sure], 0.1 * grad.sign()[sure], atol=1e-6)
    # one PGD step of an explicit size without random start is the same step, shorter
    step = pgd(model, x, y, 0.1, steps=1, step_size=0.03, random_start=False) - x
    assert torch.allclose(step[sure], 0.03 * grad.sign()[sure], atol=1e-6)
    # random start (Wong et al. 2020): delta ~ U[-eps, eps], a step of 1.25 eps from x + delta, projected
    delta = (2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(5)) - 1) * 0.1
    with torch.no_grad():
        p = torch.softmax(model(normalize(x + delta)), 1)
        grad = (2 * (p - F.one_hot(y, K).float()) @ lin.weight).reshape(x.shape)
    want = (delta + 0.125 * grad.sign()).clamp(-0.1, 0.1)
    got = fgsm(model, x, y, 0.1, random_start=True, generator=torch.Generator().manual_seed(5)) - x
    sure = grad.abs() > 1e-6 * grad.abs().max()
    assert torch.allclose(got[sure], want[sure], atol=1e-6)
    assert ((got.abs() < 0.099) & sure).float().mean() > 0.2, "some coordinates end inside the ball"


def test_stratified_subset_is_balanced_seeded_and_deterministic():
    labels = np.repeat(np.arange(4), [50, 30, 5, 15])
    np.random.default_rng(0).shuffle(labels)
    idx = stratified_subset(labels, 40, seed=1)
    assert len(idx) == 40 and len(set(idx)) == 40 and np.all(np.diff(idx) > 0)
    counts = np.bincount(labels[idx], minlength=4)
    assert counts[2] == 5, "a class smaller than its share gives all its samples"
    assert counts[[0, 1, 3]].max() - counts[[0, 1, 3]].min() <= 1 and counts.sum() == 40
    assert np.array_equal(idx, stratified_subset(labels, 40, seed=1))
    assert not np.array_equal(idx, stratified_subset(labels, 40, seed=2))
    even = stratified_subset(labels, 8, seed=1)
    assert np.array_equal(np.bincount(labels[even], minlength=4), [2, 2, 2, 2])
    odd = np.bincount(labels[stratified_subset(labels, 10, seed=3)], minlength=4)
    assert sorted(odd) == [2, 2, 3, 3]
    assert np.array_equal(stratified_subset(labels, 1000, seed=1), np.arange(100))
    assert len(stratified_subset(labels[:0], 5, seed=1)) == 0


def test_robust_accuracy_keys_tiny_eps_and_pgd_at_most_fgsm(trained):
    model, images, labels = trained
    model.train()
    cfg = RobustnessParams(epsilons=[1e-4, 0.05, 0.1, 0.2], pgd_steps=10, n_samples=60)
    r = robust_accuracy(model, images, labels, S, cfg, seed=0, batch_size=25)
    assert model.training, "the caller's mode is restored"
    model.eval()
    assert set(r) == {"n", "clean", "fgsm", "pgd"} and r["n"] == 60
    for attack in ("fgsm", "pgd"):
        assert list(r[attack]) == ["0.0001", "0.05", "0.1", "0.2"]
        assert all(0.0 <= v <= 1.0 for v in r[attack].values())
        assert r[attack]["0.0001"] == r["clean"]
    assert r["clean"] == 1.0
    for eps in ("0.05", "0.1", "0.2"):
        assert r["pgd"][eps] <= r["fgsm"][eps]
    assert r["fgsm"]["0.2"] < r["clean"] and r["pgd"]["0.2"] < r["pgd"]["0.05"]
    assert r == robust_accuracy(model, images, labels, S, cfg, seed=0, batch_size=25)
    only = robust_accuracy(model, images, labels, S, RobustnessParams(attacks=["pgd"], epsilons=[0.1], n_samples=9),
                           seed=0, batch_size=4)
    assert set(only) == {"n", "clean", "pgd"} and list(only["pgd"]) == ["0.1"] and only["n"] == 9


@pytest.mark.slow
def test_evaluate_stage_writes_robustness(tmp_path):
    over = {**SMALL,
            "strategy": {"mix": {"enabled": False}, "generative": {"enabled": False}},
            "finetune": {**SMALL["finetune"], "pretrained": False, "online_mix": {"enabled": False}, "num_threads": 1},
            "evaluate": {"robustness": {"epsilons": [0.01, 0.1], "pgd_steps": 2, "n_samples": 12}}}
    p = parse_params(over)
    for stage in ("ingest", "strategy", "traditional", "mix", "generative", "crossdomain",
                  "quality", "merge", "finetune", "evaluate"):
        run_stage(stage, p, tmp_path)
    out = tmp_path / "data" / "evaluate"
    metrics = json.loads((out / "metrics.json").read_text())
    rob = metrics["robustness"]
    assert set(rob) == {"n", "clean", "fgsm", "pgd"} and rob["n"] == 12
    assert list(rob["fgsm"]) == list(rob["pgd"]) == ["0.01", "0.1"]
    values = [rob["clean"], *rob["fgsm"].values(), *rob["pgd"].values()]
    assert all(0.0 <= v <= 1.0 for v in values)
    with open(out / "robustness.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["attack"], float(r["epsilon"]), float(r["accuracy"])) for r in rows] == [
        ("none", 0.0, rob["clean"]), ("fgsm", 0.01, rob["fgsm"]["0.01"]), ("fgsm", 0.1, rob["fgsm"]["0.1"]),
        ("pgd", 0.01, rob["pgd"]["0.01"]), ("pgd", 0.1, rob["pgd"]["0.1"])]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["robustness"] == {"n": 12, "epsilon": 0.1, "fgsm": rob["fgsm"]["0.1"], "pgd": rob["pgd"]["0.1"]}
    assert metrics["accuracy"] == summary["accuracy"]
    # same params, same numbers; robustness off: no key, a header-only csv
    first = (out / "metrics.json").read_bytes()
    run_stage("evaluate", p, tmp_path)
    assert (out / "metrics.json").read_bytes() == first
    run_stage("evaluate", parse_params({**over, "evaluate": {"robustness": {"enabled": False}}}), tmp_path)
    assert "robustness" not in json.loads((out / "metrics.json").read_text())
    assert (out / "robustness.csv").read_text().splitlines() == ["attack,epsilon,accuracy"]
