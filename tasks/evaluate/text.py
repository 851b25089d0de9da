"""The evaluate stage on texts (params `modality: text`, settings in `text.evaluate`)."""


from __future__ import annotations

from pathlib import Path

import numpy as np

from augdag.errors import DataError
from augdag.layout import classes
from augdag.log import logger
from augdag.params import Params
from augdag.storage import atomic_dir, write_json, write_text
from augdag.tasks import out_dir
from augdag.tasks._text import _csv, _raw


def evaluate(p: Params, root: Path) -> dict:
    from augdag import device, tracking
    from augdag.text import classifier

    dev = device.for_stage(p, "evaluate")
    names = classes(root)
    raw = _raw(root)
    test = raw[raw.split == "test"]
    model = classifier.TextClassifier.load(out_dir(root, "finetune")).to(dev)
    if list(model.classes) != names:
        raise DataError(f"{out_dir(root, 'finetune')}: the model's classes {model.classes} are not the ingest "
                        f"classes {names}; re-run finetune")
    from augdag.env import torch_threads

    dlg = p.text.dialogue
    items = test.text.tolist()
    if dlg.enabled:  # held-out real turns in simulated dialogues, each read with its context
        from augdag.tasks.dialogue.text import turns

        test, items = turns(root, "test", dlg.context)
    with torch_threads(p.text.finetune.num_threads), classifier.encoder.on_device(dev):
        probs = model.predict_proba(items, batch_size=min(p.evaluate.batch_size, 256))
    ev = classifier.evaluate_probs(probs, test.label.to_numpy(), names)
    f1 = [c["f1"] for c in ev["per_class"].values()]
    metrics = {"accuracy": ev["accuracy"], "macro_f1": round(float(np.mean(f1)), 6), "n_test": ev["n"],
               "loss": ev["loss"]}
    if metrics["accuracy"] < p.evaluate.min_accuracy:
        logger().warning("evaluate: test accuracy %.4f is below evaluate.min_accuracy %.4f", metrics["accuracy"],
                         p.evaluate.min_accuracy)
    pred = probs.argmax(1)
    preds = [{"sample_id": sid, "actual": names[a], "predicted": names[b], "confidence": round(float(probs[i, b]), 6)}
             for i, (sid, a, b) in enumerate(zip(test.sample_id, test.label, pred))]
    with atomic_dir(out_dir(root, "evaluate")) as tmp:
        tracking.log_metrics(tmp, metrics)
        write_json(tmp / "confusion.json", {"classes": names, "matrix": ev["confusion"]})
        write_text(tmp / "predictions.csv", _csv(preds, ["sample_id", "actual", "predicted", "confidence"]))
        write_text(tmp / "robustness.csv", _csv([], ["attack", "epsilon", "accuracy", "n"]))
        write_text(tmp / "target_predictions.csv", _csv([], ["file", "actual", "predicted"]))  # images only
        summary = {**metrics, "modality": "text", "per_class": ev["per_class"],
                   "dialogue": dialogue_breakdown(test, pred) if dlg.enabled else None,
                   "robustness": "not measured for text (the attacks perturb pixels)", **device.describe(dev)}
        write_json(tmp / "summary.json", summary)
    return metrics


def dialogue_breakdown(turns, pred) -> dict:
    """Accuracy on the first turns of the test dialogues (no context to read) and on the later ones."""
    import json

    first = np.array([json.loads(o)["turn"] == 0 for o in turns.op_params])
    right = pred == turns.label.to_numpy()
    return {"turns": int(len(right)), "dialogues": int(first.sum()),
            "accuracy_first_turn": round(float(right[first].mean()), 6) if first.any() else None,
            "accuracy_later_turns": round(float(right[~first].mean()), 6) if (~first).any() else None}


def run(p: Params, root: Path, **_) -> dict:
    return evaluate(p, Path(root))
