"""L-inf adversarial attacks on [0, 1] pixels, and accuracy under attack.

FGSM: one step along the sign of the input gradient of the loss (Goodfellow, Shlens, Szegedy,
"Explaining and Harnessing Adversarial Examples", ICLR 2015); with a random start in the eps-ball
and step 1.25·eps as in Wong, Rice, Kolter, "Fast is better than free", ICLR 2020.
PGD: several such steps of a smaller size from a random start in the eps-ball, each projected back
onto it (Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018).

Attacks take and return [0, 1] pixels (N×3×S×S, see models.to_unit); the model is fed
models.normalize(x). They use torch.autograd.grad on the input only, so the model's parameter
.grad and its train/eval mode are left as they were (BatchNorm running statistics of a model in
train mode are updated by the attack's forward passes, as in any training forward pass).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from augdag.log import logger
from augdag.models import normalize, to_unit
from augdag.seeding import derive_seed, rng


def soft_ce(logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy against B×K probabilities or B integer labels; reduction 'mean', 'sum' or 'none'."""
    if target.ndim == logits.ndim:
        per = torch.sum(-target * torch.log_softmax(logits, dim=1), dim=1)
    else:
        per = F.cross_entropy(logits, target.long(), reduction="none")
    if reduction == "none":
        return per
    return per.sum() if reduction == "sum" else per.mean()


def _input_grad(model: nn.Module, x01: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    x = x01.detach().requires_grad_(True)
    # sum, not mean: per-sample gradients do not shrink with the batch size (only their sign is used)
    loss = soft_ce(model(normalize(x)), target, reduction="sum")
    (g,) = torch.autograd.grad(loss, x)
    return g


def _uniform_ball(x: torch.Tensor, eps: float, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else x.device
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=device).to(x.device)
    return (2.0 * u - 1.0) * eps


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.clamp(torch.minimum(torch.maximum(x_adv, x - eps), x + eps), 0.0, 1.0).detach()


def fgsm(model: nn.Module, x01: torch.Tensor, target: torch.Tensor, eps: float, random_start: bool = False,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """One signed-gradient step of size eps from x (or of 1.25·eps from a uniform point of the
    eps-ball when random_start), projected onto the eps-ball around x and clamped to [0, 1]."""
    x = x01.detach()
    if random_start:
        start, step = torch.clamp(x + _uniform_ball(x, eps, generator), 0.0, 1.0), 1.25 * eps
    else:
        start, step = x, eps
    return _project(start + step * _input_grad(model, start, target).sign(), x, eps)


def pgd(model: nn.Module, x01: torch.Tensor, target: torch.Tensor, eps: float, steps: int,
        step_size: float | None = None, random_start: bool = True,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """`steps` signed-gradient steps of `step_size` (None: 2.5·eps/steps), each projected onto the
    L-inf eps-ball around x and clamped to [0, 1]; the last iterate is returned."""
    x = x01.detach()
    alpha = 2.5 * eps / steps if step_size is None else step_size
    adv = torch.clamp(x + _uniform_ball(x, eps, generator), 0.0, 1.0) if random_start else x.clone()
    for _ in range(steps):
        adv = _project(adv + alpha * _input_grad(model, adv, target).sign(), x, eps)
    return adv


def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded subset of min(n, len) samples, spread over the classes as equally
    as their sizes allow (a class with too few samples gives all it has; the rest go to the others)."""
    labels = np.asarray(labels)
    total = min(int(n), len(labels))
    g = rng(seed, "evaluate", "robustness")
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.zeros(len(classes), dtype=np.int64)
    left = total
    while left > 0:
        open_ = np.flatnonzero(quota < counts)
        share = left // len(open_)
        if share == 0:
            quota[np.sort(g.choice(open_, size=left, replace=False))] += 1
            break
        add = np.minimum(share, counts[open_] - quota[open_])
        quota[open_] += add
        left -= int(add.sum())
    picked = [g.choice(np.flatnonzero(labels == c), size=int(q), replace=False) for c, q in zip(classes, quota) if q]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def eps_key(eps: float) -> str:
    """0.03 -> '0.03' (repr of the float: short and exact)."""
    return repr(float(eps))


def robust_accuracy(model: nn.Module, images_uint8: torch.Tensor, labels: np.ndarray, image_size: int, cfg,
                    seed: int, batch_size: int) -> dict:
    """Accuracy on a seeded class-stratified subset of `cfg.n_samples`: clean and under each of
    `cfg.attacks` at each of `cfg.epsilons` (cfg: params.RobustnessParams), the model in eval mode.
    {"n": n, "clean": acc, "fgsm": {"0.01": acc, ...}, "pgd": {...}}."""
    log = logger()
    idx = stratified_subset(labels, cfg.n_samples, seed)
    y = torch.as_tensor(np.asarray(labels)[idx], dtype=torch.long)
    n = len(idx)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    batches = [(b, slice(i, i + batch_size)) for b, i in enumerate(range(0, n, batch_size))]
    was_training = model.training
    model.eval()

    def accuracy(attack: str | None, eps: float = 0.0) -> float:
        correct = 0
        for b, part in batches:
            x = to_unit(images_uint8[torch.as_tensor(idx[part])], image_size).to(device)
            t = y[part].to(device)
            if attack is not None:
                gen = torch.Generator().manual_seed(derive_seed(seed, "evaluate", attack, eps_key(eps), b))
                if attack == "fgsm":
                    x = fgsm(model, x, t, eps, random_start=False, generator=gen)
                elif attack == "pgd":
                    x = pgd(model, x, t, eps, cfg.pgd_steps, cfg.pgd_step_size, random_start=True, generator=gen)
                else:
                    raise ValueError(f"unknown attack {attack!r}; allowed: fgsm, pgd")
            with torch.no_grad():
                correct += int((model(normalize(x)).argmax(1) == t).sum())
        return correct / max(n, 1)

    try:
        out: dict = {"n": n, "clean": accuracy(None)}
        log.info("evaluate: robustness on %d test samples, clean accuracy %.4f", n, out["clean"])
        for attack in cfg.attacks:
            out[attack] = {}
            for eps in cfg.epsilons:
                acc = accuracy(attack, eps)
                out[attack][eps_key(eps)] = acc
                log.info("evaluate: %s eps=%s accuracy %.4f", attack, eps_key(eps), acc)
    finally:
        model.train(was_training)
    return out
