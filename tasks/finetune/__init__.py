"""Fine-tune a pretrained backbone on the merged set, drawing batches by per-source sampling weights.

Targets are probability vectors (hard labels become one-hot), so mixed samples train with
soft-target cross-entropy. The model is saved as safetensors; the training curve and the source
weights' trajectory are DVC plots.

Sampling (finetune.sampling.mode): `static` keeps merge.weights' source masses, `uniform` draws
every sample alike, `dynamic` re-weights the sources every `every` steps from a feedback signal:
the cosine between the validation-loss gradient and a source's training-loss gradient. A step of
size lr along a source's gradient changes the validation loss by about -lr * <g_val, g_source>
(first-order Taylor), so the cosine is that source's predicted help per unit of gradient, free of
the gradient's scale; the update is w <- max(w + eta * (feedback - mean feedback), w_min), then
normalised. (Gradient alignment as a data-weighting signal: Ren et al. 2018, "Learning to
Reweight Examples"; Fan et al. 2024, "DoGE".)
"""

from __future__ import annotations

import contextlib
import csv
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from augdag import device, mixing, tracking
from augdag.adversarial import fgsm, soft_ce
from augdag.consistency import unlabelled_loss, weak_view
from augdag.errors import DataError
from augdag.layout import classes
from augdag.log import Progress, logger
from augdag.models import build_model, normalize, preprocess, to_unit
from augdag.params import Params
from augdag.seeding import derive_seed, rng
from augdag.storage import StageData, atomic_dir, write_json
from augdag.tasks import out_dir


def targets(manifest, n_classes: int) -> torch.Tensor:
    y = torch.zeros(len(manifest), n_classes)
    for i, (label, soft) in enumerate(zip(manifest.label, manifest.soft_label)):
        if soft is not None and not (isinstance(soft, float) and np.isnan(soft)) and len(soft):
            if len(soft) != n_classes:
                raise DataError(f"sample {manifest.sample_id.iloc[i]!r}: soft label of {len(soft)} classes; "
                                f"the dataset has {n_classes}")
            y[i] = torch.as_tensor(np.asarray(soft, dtype=np.float32))
        else:
            if label is None or label is pd.NA or not 0 <= int(label) < n_classes:
                raise DataError(f"sample {manifest.sample_id.iloc[i]!r}: label {label} is not a class index "
                                f"0..{n_classes - 1}")
            y[i, int(label)] = 1.0
    return y


def online_augment(images: torch.Tensor, policy: str, seed: int, step: int) -> torch.Tensor:
    """Apply a torchvision policy (TrivialAugmentWide, RandAugment, AugMix) to each N x H x W x C uint8 image,
    seeded by (seed, step).

    The policy draws from torch's global generator, so it runs inside a forked, seeded RNG state."""
    if policy == "none":
        return images
    from torchvision.transforms import v2

    t = {"trivial_augment_wide": v2.TrivialAugmentWide, "randaugment": v2.RandAugment, "augmix": v2.AugMix}[policy]()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "finetune", "online_augment", step))
        out = [t(img.permute(2, 0, 1)).permute(1, 2, 0) for img in images]
    return torch.stack(out).contiguous()


def _flat_grad(model, loss, params) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(q)).reshape(-1) for g, q in zip(grads, params)])


class SourceSampler:
    """Per-sample draw weights from per-source weights; the dynamic mode's feedback and update."""

    def __init__(self, sources: np.ndarray, static_weights: np.ndarray, cfg, seed: int):
        self.cfg, self.seed = cfg, seed
        self.names = list(dict.fromkeys(sources.tolist()))
        self.index = np.array([self.names.index(s) for s in sources])
        self.counts = np.bincount(self.index, minlength=len(self.names)).astype(np.float64)
        mass = np.bincount(self.index, weights=static_weights, minlength=len(self.names))
        self.w = mass / mass.sum()
        self.static = torch.as_tensor(static_weights)
        self.trajectory: list[dict] = []

    def weights(self) -> torch.Tensor:
        if self.cfg.mode == "static":
            return self.static
        if self.cfg.mode == "uniform":
            return torch.ones(len(self.index), dtype=torch.float64)
        return torch.as_tensor(self.w[self.index] / self.counts[self.index])

    def record(self, step: int, feedback: dict | None = None) -> None:
        """One row per source (long format, so a DVC plot draws one line per source whatever they are)."""
        w = self.counts / self.counts.sum() if self.cfg.mode == "uniform" else self.w
        for n, v in zip(self.names, w):
            self.trajectory.append({"step": step, "source": n, "weight": round(float(v), 6),
                                    "feedback": round(float(feedback[n]), 6) if feedback else None})

    def final(self) -> dict:
        last = self.trajectory[-1]["step"]
        return {r["source"]: r["weight"] for r in self.trajectory if r["step"] == last}

    def update(self, model, x, y, xv, yv, image_size: int, step: int) -> dict:
        """Feedback per source (cosine of validation and source gradients, model in eval mode) and the update."""
        cfg = self.cfg
        g = rng(self.seed, "finetune", "feedback", step)
        params = [q for q in model.parameters() if q.requires_grad]
        was_training = model.training
        model.eval()
        dev = params[0].device
        vi = torch.as_tensor(g.choice(len(xv), size=min(cfg.feedback_batch, len(xv)), replace=False))
        g_val = _flat_grad(model,
                           torch.nn.functional.cross_entropy(model(preprocess(xv[vi].to(dev), image_size)),
                                                             yv[vi].to(dev)),
                           params)
        feedback = {}
        for k, name in enumerate(self.names):
            members = np.flatnonzero(self.index == k)
            si = torch.as_tensor(g.choice(members, size=min(cfg.feedback_batch, len(members)), replace=False))
            g_s = _flat_grad(model, soft_ce(model(preprocess(x[si].to(dev), image_size)), y[si].to(dev)), params)
            feedback[name] = float(torch.nn.functional.cosine_similarity(g_val, g_s, dim=0))
        model.train(was_training)
        self.apply_feedback(feedback, step)
        return feedback

    def apply_feedback(self, feedback: dict, step: int) -> None:
        """w <- max(w + eta * (feedback - mean feedback), w_min), normalised; recorded in the trajectory."""
        f = np.array([feedback[n] for n in self.names])
        self.w = np.maximum(self.w + self.cfg.eta * (f - f.mean()), self.cfg.w_min)
        self.w = self.w / self.w.sum()
        self.record(step, feedback)


@torch.no_grad()
def predict(model, images: torch.Tensor, image_size: int, batch_size: int = 256, precision=None) -> torch.Tensor:
    """Logits (float32, on the CPU) for N x H x W x C uint8 images, computed on the model's device."""
    model.eval()
    dev = next(model.parameters()).device
    amp = precision.autocast() if precision is not None else contextlib.nullcontext()
    with amp:
        out = [model(preprocess(images[i:i + batch_size].to(dev), image_size)).float().cpu()
               for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.zeros(0)


def run(p: Params, root: Path, **_) -> dict:
    fp = p.finetune
    log = logger()
    dev = device.for_stage(p, "finetune")
    prec = device.Precision(dev, p.device.mixed_precision)
    torch.set_num_threads(fp.num_threads)
    torch.manual_seed(derive_seed(p.seed, "finetune", "init"))
    cls = classes(root)
    merged = StageData(out_dir(root, "merge"))
    raw = StageData(out_dir(root, "ingest"))
    x = torch.from_numpy(merged.images(merged.manifest))
    y = targets(merged.manifest, len(cls))
    sampler = SourceSampler(merged.manifest.branch.to_numpy(), merged.manifest.weight.to_numpy(dtype=np.float64),
                            fp.sampling, p.seed)
    val_rows = raw.manifest[raw.manifest.split == "val"]
    xv, yv = torch.from_numpy(raw.images(val_rows)), torch.as_tensor(val_rows.label.to_numpy(dtype=np.int64))
    if fp.sampling.mode == "dynamic" and not len(xv):
        raise DataError("finetune.sampling.mode = dynamic needs a validation split (ingest.n_val_per_class >= 1)")
    cons, xu = fp.consistency, None
    if cons.enabled:
        u_rows = raw.manifest[raw.manifest.split == "unlabelled"]  # images only: their labels are never read
        if not len(u_rows):
            raise DataError("finetune.consistency.enabled needs unlabelled images: set ingest.n_unlabelled_per_class "
                            ">= 1 (drawn from the rest of the raw data)")
        xu = torch.from_numpy(raw.images(u_rows))
        ugen = torch.Generator().manual_seed(derive_seed(p.seed, "finetune", "unlabelled"))
        strong_seed, rates = derive_seed(p.seed, "consistency", "strong"), []

    model = build_model(fp.model, len(cls), fp.pretrained).to(dev)
    if fp.freeze == "backbone":
        head = {id(q) for q in model.get_classifier().parameters()} if hasattr(model, "get_classifier") else set()
        for q in model.parameters():
            q.requires_grad = id(q) in head
    trainable = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=fp.lr, weight_decay=fp.weight_decay)
    gen = torch.Generator().manual_seed(derive_seed(p.seed, "finetune", "sampler"))
    adv = fp.adversarial
    adv_gen = torch.Generator().manual_seed(derive_seed(p.seed, "finetune", "adversarial"))
    log.info("finetune: %s on %d samples (%d classes, sources %s), %d steps of %d on %s (%s), sampling %s%s%s",
             fp.model, len(x), len(cls), sampler.names, fp.steps, fp.batch_size, dev, prec.name, fp.sampling.mode,
             f", online {fp.online_augment}" if fp.online_augment != "none" else "",
             f", FGSM eps={adv.epsilon} weight={adv.weight}" if adv.enabled else "")
    if xu is not None:
        log.info("finetune: consistency training (FixMatch) on %d unlabelled images, %d a step, threshold %s, "
                 "weight %s, strong view %s", len(xu), cons.ratio * fp.batch_size, cons.threshold, cons.weight,
                 cons.strong)

    sampler.record(0)
    curve, running, t0 = [], [], time.monotonic()
    progress = Progress("finetune", fp.steps, every=10.0, quiet_below=0)
    for step in range(1, fp.steps + 1):
        model.train()
        idx = torch.multinomial(sampler.weights(), fp.batch_size, replacement=True, generator=gen)
        images = online_augment(x[idx], fp.online_augment, p.seed, step).to(dev)
        yb = y[idx].to(dev)
        mix_rng = rng(p.seed, "finetune", "online_mix", step) if fp.online_mix.enabled else None
        with prec.autocast():
            if adv.enabled:
                x01 = to_unit(images, fp.image_size)
                if mix_rng is not None:
                    x01, yb = mixing.mix_batch(x01, yb, fp.online_mix, mix_rng)
                x_adv = fgsm(model, x01, yb, adv.epsilon, random_start=adv.random_start, generator=adv_gen)
                loss = ((1.0 - adv.weight) * soft_ce(model(normalize(x01)), yb)
                        + adv.weight * soft_ce(model(normalize(x_adv)), yb))
            else:
                xb = preprocess(images, fp.image_size)
                if mix_rng is not None:
                    xb, yb = mixing.mix_batch(xb, yb, fp.online_mix, mix_rng)
                loss = soft_ce(model(xb), yb)
            if xu is not None:
                weak = weak_view(xu[torch.randint(0, len(xu), (cons.ratio * fp.batch_size,), generator=ugen)],
                                 p.seed, step)
                strong = online_augment(weak, cons.strong, strong_seed, step)
                with torch.no_grad():
                    logits_weak = model(preprocess(weak.to(dev), fp.image_size))
                lu, rate = unlabelled_loss(logits_weak, model(preprocess(strong.to(dev), fp.image_size)),
                                           cons.threshold)
                loss = loss + cons.weight * lu
                rates.append(rate)
        opt.zero_grad(set_to_none=True)
        prec.step(loss, opt)
        running.append(loss.item())
        progress.update()
        if fp.sampling.mode == "dynamic" and step % fp.sampling.every == 0 and step < fp.steps:
            fb = sampler.update(model, x, y, xv, yv, fp.image_size, step)
            log.info("finetune: step %d source weights %s (feedback %s)", step,
                     " ".join(f"{n}={w:.3f}" for n, w in zip(sampler.names, sampler.w)),
                     " ".join(f"{n}={v:+.3f}" for n, v in fb.items()))
        if step % fp.eval_every == 0 or step == fp.steps:
            point = {"step": step, "train_loss": round(float(np.mean(running)), 6)}
            if len(xv):
                lv = predict(model, xv, fp.image_size, precision=prec)
                point["val_loss"] = round(float(torch.nn.functional.cross_entropy(lv, yv)), 6)
                point["val_accuracy"] = round(float((lv.argmax(1) == yv).float().mean()), 6)
            if xu is not None:  # the share of unlabelled images confident enough to be pseudo-labelled
                point["pseudo_label_rate"], rates = round(float(np.mean(rates)), 6), []
            curve.append(point)
            running = []
            log.info("finetune: step %d/%d %s (%.0fs)", step, fp.steps,
                     " ".join(f"{k}={v}" for k, v in point.items() if k != "step"), time.monotonic() - t0)

    with atomic_dir(out_dir(root, "finetune")) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        # One metadata key: safetensors writes a multi-key metadata map in per-process hash order.
        meta = json.dumps({"model": fp.model, "classes": cls, "image_size": fp.image_size}, sort_keys=True)
        save_file(state, tmp / "model.safetensors", metadata={"augdag": meta})
        tracking.log_curve(tmp / tracking.CURVE_DIR, curve)
        with open(tmp / "weights.csv", "w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=["step", "source", "weight", "feedback"])
            wr.writeheader()
            wr.writerows(sampler.trajectory)
        summary = {"steps": fp.steps, "samples": len(x), **curve[-1],
                   "sampling": {"mode": fp.sampling.mode, "sources": sampler.names, "final_weights": sampler.final(),
                                "updates": len({r["step"] for r in sampler.trajectory}) - 1},
                   **device.describe(dev), "precision": prec.name}
        write_json(tmp / "summary.json", summary)
    return summary
