"""Evaluate: accuracy, macro-F1, per-class accuracy and the confusion matrix on the test split;
accuracy under FGSM/PGD attacks on a seeded test subset (evaluate.robustness); with evaluate.target_test, the
same scores on a labelled test folder of the target domain (metrics `target`, predictions in
target_predictions.csv).

The target folder lives outside the project, so DVC does not see its files change: the metrics record its
image count and a digest of its decoded images (change it, then `dvc repro --force evaluate`)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from augdag import device, gx, tracking
from augdag.adversarial import robust_accuracy
from augdag.data import read_labelled_folder
from augdag.errors import ModelError
from augdag.layout import EXPECTATIONS, classes
from augdag.log import logger
from augdag.models import build_model
from augdag.params import Params
from augdag.storage import StageData, atomic_dir, write_json
from augdag.tasks import out_dir
from augdag.tasks.finetune import predict


def scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict:
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(1), cm.sum(0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0)
    present = support > 0
    return {
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class_accuracy": recall.tolist(),
        "confusion": cm.tolist(),
    }


def check_metrics(metrics: dict, n_classes: int, min_accuracy: float, results_path: Path) -> None:
    """expectations/metrics.json on one row per class; a fail-mode check stops the run, a warn one logs."""
    import pandas as pd

    frame = pd.DataFrame({"class": list(metrics["per_class_accuracy"]),
                          "per_class_accuracy": list(metrics["per_class_accuracy"].values())})
    frame = frame.assign(accuracy=metrics["accuracy"], macro_f1=metrics["macro_f1"], n_test=metrics["n_test"])
    results_path.parent.mkdir(parents=True, exist_ok=True)
    result = gx.run_suite(frame, EXPECTATIONS / "metrics.json", {"n_classes": n_classes, "min_accuracy": min_accuracy},
                          id_column="class", results_path=results_path)
    for w in result.warnings:
        logger().warning("evaluate: %s", w.line())


def target_scores(p: Params, model, cls: list[str], prec) -> tuple[dict, list[list[str]]]:
    """Scores on evaluate.target_test (class folders named as the raw data's classes, read as ingest reads
    images), and its (file, actual, predicted) rows."""
    import hashlib

    folder = p.evaluate.target_test
    files, y_true, images = read_labelled_folder(folder, cls, p.ingest.image_size, p.ingest.channels,
                                                 p.ingest.max_image_pixels, "evaluate.target_test")
    batch = np.stack(images)
    logits = predict(model, torch.from_numpy(batch), p.finetune.image_size, p.evaluate.batch_size, precision=prec)
    y_pred = logits.argmax(1).numpy()
    s = scores(y_true, y_pred, len(cls))
    target = {"accuracy": round(s["accuracy"], 6), "macro_f1": round(s["macro_f1"], 6), "n_test": len(files),
              "per_class_accuracy": {c: round(a, 6) for c, a in zip(cls, s["per_class_accuracy"])},
              "digest": hashlib.sha256(batch.tobytes() + y_true.tobytes()).hexdigest()}
    root = Path(folder)
    return target, [[f.relative_to(root).as_posix(), cls[t], cls[q]] for f, t, q in zip(files, y_true, y_pred)]


def run(p: Params, root: Path, **_) -> dict:
    torch.set_num_threads(p.finetune.num_threads)
    dev = device.for_stage(p, "evaluate")
    prec = device.Precision(dev, p.device.mixed_precision)
    cls = classes(root)
    model = build_model(p.finetune.model, len(cls), pretrained=False)
    path = out_dir(root, "finetune") / "model.safetensors"
    try:
        state = load_file(path)  # safetensors: tensors only, nothing is unpickled
    except Exception as err:  # noqa: BLE001 (safetensors raises its own SafetensorError for a corrupt file)
        raise ModelError(f"{path}: not a readable safetensors model file: {err}") from None
    try:
        model.load_state_dict(state)
    except (RuntimeError, OSError) as err:
        raise ModelError(f"{path}: cannot load into {p.finetune.model} with {len(cls)} classes: {err}") from None
    raw = StageData(out_dir(root, "ingest"))
    test = raw.manifest[raw.manifest.split == "test"]
    images = torch.from_numpy(raw.images(test))
    model = model.to(dev)
    logits = predict(model, images, p.finetune.image_size, p.evaluate.batch_size, precision=prec)
    y_true = test.label.to_numpy(dtype=np.int64)
    y_pred = logits.argmax(1).numpy()
    s = scores(y_true, y_pred, len(cls))
    metrics = {"accuracy": round(s["accuracy"], 6), "macro_f1": round(s["macro_f1"], 6), "n_test": int(len(test)),
               "per_class_accuracy": {c: round(a, 6) for c, a in zip(cls, s["per_class_accuracy"])}}
    summary = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "n_test": metrics["n_test"],
               **device.describe(dev), "precision": prec.name}
    check_metrics(metrics, len(cls), p.evaluate.min_accuracy, out_dir(root, "validation") / "evaluate" / "metrics.json")
    target_rows = None
    if p.evaluate.target_test:
        metrics["target"], target_rows = target_scores(p, model, cls, prec)
        summary["target_accuracy"] = metrics["target"]["accuracy"]
        logger().info("evaluate: target-domain accuracy %.4f on %d images (test split: %.4f)",
                      metrics["target"]["accuracy"], metrics["target"]["n_test"], metrics["accuracy"])
    rob, rob_rows = p.evaluate.robustness, []
    if rob.enabled:
        logger().info("evaluate: robustness, %s at eps %s on up to %d test samples", "/".join(rob.attacks),
                      rob.epsilons, rob.n_samples)
        with prec.autocast():
            r = robust_accuracy(model, images, y_true, p.finetune.image_size, rob, p.seed, p.evaluate.batch_size)
        robustness = {"n": r["n"], "clean": round(r["clean"], 6),
                      **{a: {e: round(v, 6) for e, v in r[a].items()} for a in rob.attacks}}
        metrics["robustness"] = robustness
        worst = max(rob.epsilons)
        summary["robustness"] = {"n": r["n"], "epsilon": worst,
                                 **{a: robustness[a][repr(float(worst))] for a in rob.attacks}}
        rob_rows = [["none", 0, robustness["clean"]]]
        rob_rows += [[a, e, v] for a in rob.attacks for e, v in robustness[a].items()]
    with atomic_dir(out_dir(root, "evaluate")) as tmp:
        tracking.log_metrics(tmp, metrics)
        write_json(tmp / "summary.json", summary)
        write_json(tmp / "confusion.json", {"classes": cls, "matrix": s["confusion"]})
        with open(tmp / "predictions.csv", "w", newline="") as f:
            wr = csv.writer(f)
            wr.writerow(["sample_id", "actual", "predicted"])
            for sid, t, q in zip(test.sample_id, y_true, y_pred):
                wr.writerow([sid, cls[t], cls[q]])
        with open(tmp / "target_predictions.csv", "w", newline="") as f:  # a DVC out: header only without a target
            wr = csv.writer(f)
            wr.writerow(["file", "actual", "predicted"])
            wr.writerows(target_rows or [])
        with open(tmp / "robustness.csv", "w", newline="") as f:  # a DVC out: header only when robustness is off
            wr = csv.writer(f)
            wr.writerow(["attack", "epsilon", "accuracy"])
            wr.writerows(rob_rows)
    return summary
