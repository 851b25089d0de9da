"""Fine-tune a pretrained backbone on the merged set, drawing batches by the merged sampling weights.

Targets are probability vectors (hard labels become one-hot), so mixed samples train with
soft-target cross-entropy. The model is saved as safetensors; the training curve is a DVC plot.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from augdag import mixing
from augdag.log import logger
from augdag.models import build_model, preprocess
from augdag.params import Params
from augdag.seeding import derive_seed, rng
from augdag.storage import StageData, atomic_dir, write_json
from augdag.tasks import out_dir
from augdag.tasks.ingest import classes


def targets(manifest, n_classes: int) -> torch.Tensor:
    y = torch.zeros(len(manifest), n_classes)
    for i, (label, soft) in enumerate(zip(manifest.label, manifest.soft_label)):
        if soft is not None and not (isinstance(soft, float) and np.isnan(soft)) and len(soft):
            y[i] = torch.as_tensor(np.asarray(soft, dtype=np.float32))
        else:
            y[i, int(label)] = 1.0
    return y


@torch.no_grad()
def predict(model, images: torch.Tensor, image_size: int, batch_size: int = 256) -> torch.Tensor:
    """Logits for N x H x W x C uint8 images."""
    model.eval()
    out = [model(preprocess(images[i:i + batch_size], image_size)) for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.zeros(0)


def run(p: Params, root: Path, **_) -> dict:
    fp = p.finetune
    log = logger()
    torch.set_num_threads(fp.num_threads)
    torch.manual_seed(derive_seed(p.seed, "finetune", "init"))
    cls = classes(root)
    merged = StageData(out_dir(root, "merge"))
    raw = StageData(out_dir(root, "ingest"))
    x = torch.from_numpy(merged.images(merged.manifest))
    y = targets(merged.manifest, len(cls))
    weights = torch.as_tensor(merged.manifest.weight.to_numpy(dtype=np.float64))
    val_rows = raw.manifest[raw.manifest.split == "val"]
    xv, yv = torch.from_numpy(raw.images(val_rows)), torch.as_tensor(val_rows.label.to_numpy(dtype=np.int64))

    model = build_model(fp.model, len(cls), fp.pretrained)
    if fp.freeze == "backbone":
        head = {id(q) for q in model.get_classifier().parameters()} if hasattr(model, "get_classifier") else set()
        for q in model.parameters():
            q.requires_grad = id(q) in head
    trainable = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=fp.lr, weight_decay=fp.weight_decay)
    gen = torch.Generator().manual_seed(derive_seed(p.seed, "finetune", "sampler"))
    log.info("finetune: %s on %d samples (%d classes), %d steps of %d", fp.model, len(x), len(cls), fp.steps, fp.batch_size)

    curve, running, t0 = [], [], time.monotonic()
    for step in range(1, fp.steps + 1):
        model.train()
        idx = torch.multinomial(weights, fp.batch_size, replacement=True, generator=gen)
        xb, yb = preprocess(x[idx], fp.image_size), y[idx]
        if fp.online_mix.enabled:
            xb, yb = mixing.mix_batch(xb, yb, fp.online_mix, rng(p.seed, "finetune", "online_mix", step))
        logits = model(xb)
        loss = torch.sum(-yb * torch.log_softmax(logits, dim=1), dim=1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running.append(loss.item())
        if step % fp.eval_every == 0 or step == fp.steps:
            point = {"step": step, "train_loss": round(float(np.mean(running)), 6)}
            if len(xv):
                lv = predict(model, xv, fp.image_size)
                point["val_loss"] = round(float(torch.nn.functional.cross_entropy(lv, yv)), 6)
                point["val_accuracy"] = round(float((lv.argmax(1) == yv).float().mean()), 6)
            curve.append(point)
            running = []
            log.info("finetune: step %d/%d %s (%.0fs)", step, fp.steps,
                     " ".join(f"{k}={v}" for k, v in point.items() if k != "step"), time.monotonic() - t0)

    with atomic_dir(out_dir(root, "finetune")) as tmp:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        # One metadata key: safetensors writes a multi-key metadata map in per-process hash order.
        meta = json.dumps({"model": fp.model, "classes": cls, "image_size": fp.image_size}, sort_keys=True)
        save_file(state, tmp / "model.safetensors", metadata={"augdag": meta})
        with open(tmp / "curve.csv", "w", newline="") as f:
            cols = list(curve[-1].keys())
            wr = csv.DictWriter(f, fieldnames=cols)
            wr.writeheader()
            wr.writerows(curve)
        summary = {"steps": fp.steps, "samples": len(x), **curve[-1]}
        write_json(tmp / "summary.json", summary)
    return summary
