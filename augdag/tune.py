"""Choose the augmentation strategy for the user's data: `augdag tune`.

Optuna's TPE sampler searches SPACE (the branches and their multipliers, flips and op strength of the
traditional branch, the quality gate, an online policy, online Mixup/CutMix) on top of params.yaml. A trial
is scored on validation only: the mean final validation accuracy of `folds` fine-tunes, each with its own
seed, so its own draw of the train and validation images from the raw data (repeated random sub-sampling)
and its own initialisation; with 20 images per class one split's accuracy moves by several points, and a
mean over splits keeps the choice from being one seed's accident. Test data are never read: the runs stop
after the fine-tune. A trial whose running mean falls below the median of earlier trials at the same fold
is pruned (Optuna's MedianPruner). Fold seeds start at FOLD_SEED, apart from the seeds `augdag compare`
measures with.

Each (trial params, fold) run is cached by params hash under `<out>/runs/`, so a search that stopped
resumes, and the sampler, seeded, proposes the same trials again. Outputs: `<out>/trials.csv` (one row per
trial: its knobs, per-fold validation accuracy, mean, state), `<out>/tune.json` (the search and the
winner's overrides), `<out>/metrics.json` (for DVC). `--apply` writes the winner into params.yaml as
`augdag run --set` would.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from augdag import compare
from augdag.api import dotted
from augdag.errors import AugdagError
from augdag.params import Params, deep_merge, parse_params
from augdag.storage import read_json, write_json, write_text

FOLD_SEED = 1000
STAGES = compare.STAGES[:compare.STAGES.index("finetune") + 1]  # a comparison's runs, stopped before test data


def suggest(trial, unlabelled: bool = False) -> tuple[dict, dict]:
    """The trial's knobs (flat, as Optuna records them) and the params overrides they stand for. `unlabelled`:
    params.yaml has an unlabelled pool (ingest.n_unlabelled_per_class), so consistency training is a knob."""
    knobs: dict[str, Any] = {
        "traditional": trial.suggest_int("traditional", 0, 4),
        "mix": trial.suggest_int("mix", 0, 2),
        "generative": trial.suggest_int("generative", 0, 1),
        "online_augment": trial.suggest_categorical("online_augment",
                                                    ["none", "trivial_augment_wide", "randaugment", "augmix"]),
        "online_mix": trial.suggest_categorical("online_mix", ["off", "mixup", "cutmix", "both"]),
    }
    if knobs["traditional"]:
        knobs["hflip"] = trial.suggest_categorical("hflip", [0.0, 0.5])  # off where a flip changes the class
        knobs["strength"] = trial.suggest_float("strength", 0.25, 2.0, log=True)
    if knobs["traditional"] or knobs["mix"] or knobs["generative"]:
        knobs["gate"] = trial.suggest_categorical("gate", ["filter", "off"])
    if unlabelled:
        knobs["consistency"] = trial.suggest_categorical("consistency", ["off", "fixmatch"])
    return knobs, overrides(knobs)


def suggest_text(trial) -> tuple[dict, dict]:
    """The text DAG's knobs: EDA variants per text and their strength, embedding-Mixup pairs per text,
    back-translation, the gate (the classifier, e.g. text.finetune.contrastive_steps, stays params.yaml's)."""
    knobs: dict[str, Any] = {"traditional": trial.suggest_int("traditional", 0, 4),
                             "mix": trial.suggest_int("mix", 0, 2),
                             "generative": trial.suggest_int("generative", 0, 1)}
    if knobs["traditional"]:
        knobs["strength"] = trial.suggest_float("strength", 0.5, 3.0, log=True)
    if knobs["traditional"] or knobs["mix"] or knobs["generative"]:
        knobs["gate"] = trial.suggest_categorical("gate", ["filter", "off"])
    return knobs, overrides(knobs, text=True)


def _plan(knobs: dict) -> dict:
    return {b: ({"enabled": True, "multiplier": int(knobs[b])} if knobs.get(b) else {"enabled": False,
                                                                                    "multiplier": 1})
            for b in ("traditional", "mix", "generative")}


def overrides(knobs: dict, text: bool = False) -> dict:
    """params overrides for a set of knobs (every knob pinned, so a trial means the same on any params.yaml);
    `text`: the knobs of suggest_text."""
    plan = _plan(knobs)
    gate = compare.NOGATE["quality"] if knobs.get("gate") == "off" else compare.GATED["quality"]
    if text:
        out = {"strategy": plan, "quality": gate}
        if knobs.get("traditional"):
            a = round(min(0.5, 0.1 * float(knobs.get("strength", 1.0))), 4)
            out["text"] = {"traditional": {"ops": {"synonym": {"alpha": a}, "insert": {"alpha": a},
                                                   "swap": {"alpha": a}, "delete": {"rate": a}}}}
        return out
    mix = knobs.get("online_mix", "off")
    out = {"strategy": plan,
           "finetune": {"online_augment": knobs.get("online_augment", "none"),
                        "online_mix": {"enabled": mix != "off", **({"mode": mix} if mix != "off" else {})},
                        "consistency": {"enabled": knobs.get("consistency") == "fixmatch"}},
           "quality": gate}
    if knobs.get("traditional"):
        s = float(knobs.get("strength", 1.0))
        out["traditional"] = {"ops": {
            "hflip": {"p": float(knobs.get("hflip", 0.5))},
            "rotation": {"degrees": round(min(180.0, 15.0 * s), 4)},
            "affine": {"translate": round(min(0.5, 0.1 * s), 4),
                       "scale": [round(max(0.5, 1 - 0.1 * s), 4), round(min(2.0, 1 + 0.1 * s), 4)]},
            "color_jitter": {"brightness": round(min(1.0, 0.2 * s), 4), "contrast": round(min(1.0, 0.2 * s), 4)},
        }}
    return out


def _params(base: dict, over: dict, seed: int) -> Params:
    return parse_params(deep_merge(deep_merge(base, over), {"seed": seed}), f"tune trial, seed {seed}")


def run_fold(params: Params, out: Path, base_dir: Path) -> dict:
    """Validation accuracy of one fine-tune (ingest..finetune in a scratch folder), cached by params hash."""
    h = compare.params_hash(params)
    path = out / "runs" / f"{h[:16]}.json"
    rec = read_json(path) if path.exists() else None
    if rec and rec.get("params_hash") == h:
        return {**rec, "cached": True}

    def read(root: Path, _stage_seconds: dict, seconds: float) -> dict:
        final = read_json(root / "data" / "finetune" / "summary.json") or {}
        if final.get("val_accuracy") is None:
            raise AugdagError(f"{root}: the fine-tune recorded no validation accuracy (ingest.n_val_per_class = 0?); "
                              "tune scores trials on validation only")
        return {"params_hash": h, "seed": params.seed, "val_accuracy": float(final["val_accuracy"]),
                "val_loss": final.get("val_loss"), "seconds": seconds}

    rec = compare.in_scratch(params, out / "work" / h[:16], STAGES, base_dir, read)
    write_json(path, rec)
    return {**rec, "cached": False}


def search(root: str | Path, trials: int = 20, folds: int = 3, out: str | Path = "data/tune", seed: int = 0,
           timeout: float | None = None, fold_runner: Callable | None = None, log: Callable = print) -> dict:
    """Run the search; write trials.csv, tune.json and metrics.json into `out`; return tune.json's content."""
    import optuna

    if trials < 1 or folds < 1:
        raise AugdagError(f"tune: --trials and --folds must be >= 1 (got {trials}, {folds})")
    root = Path(root).resolve()
    out_p = Path(out) if Path(out).is_absolute() else root / out
    base = compare.load_base(root)
    _params(base, {}, FOLD_SEED)  # a bad params.yaml fails here, before the first fine-tune
    run = fold_runner or (lambda p: run_fold(p, out_p, root))
    unlabelled = bool((base.get("ingest") or {}).get("n_unlabelled_per_class"))
    text = base.get("modality") == "text"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0))
    rows, t0 = [], time.monotonic()
    for number in range(trials):
        if timeout is not None and time.monotonic() - t0 > timeout:
            log(f"tune: time budget of {timeout:.0f} s spent after {number} trials")
            break
        trial = study.ask()
        knobs, over = suggest_text(trial) if text else suggest(trial, unlabelled)
        scores, state = [], "complete"
        for k in range(folds):
            rec = run(_params(base, over, FOLD_SEED + k))
            scores.append(rec["val_accuracy"])
            trial.report(statistics.fmean(scores), k)
            if k < folds - 1 and trial.should_prune():
                state = "pruned"
                break
        value = statistics.fmean(scores)
        if state == "pruned":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, value)
        rows.append({"trial": number, "state": state, "val_accuracy_mean": round(value, 6),
                     "val_accuracy": [round(s, 6) for s in scores], "knobs": knobs})
        log(f"tune: trial {number} {state}: mean validation accuracy {value:.4f} over {len(scores)} fold(s); "
            + ", ".join(f"{k}={v}" for k, v in knobs.items()))
    done = [r for r in rows if r["state"] == "complete"]
    if not done:
        raise AugdagError("tune: no trial completed; raise --trials or the time budget")
    best = max(done, key=lambda r: (r["val_accuracy_mean"], -r["trial"]))
    best_over = overrides(best["knobs"], text)
    result = {"trials": len(rows), "completed": len(done), "pruned": len(rows) - len(done), "folds": folds,
              "fold_seeds": [FOLD_SEED + k for k in range(folds)], "sampler": f"TPE(seed={seed})",
              "pruner": "median (n_startup_trials=3)", "seconds": round(time.monotonic() - t0, 1),
              "best": {**best, "overrides": best_over, "set": dotted(best_over)},
              "rows": rows}
    out_p.mkdir(parents=True, exist_ok=True)
    write_text(out_p / "trials.csv", trials_csv(rows))
    write_json(out_p / "tune.json", result)
    write_json(out_p / "metrics.json", {"best_val_accuracy": best["val_accuracy_mean"], "trials": len(rows),
                                        "pruned": len(rows) - len(done), "seconds": result["seconds"]})
    shutil.rmtree(out_p / "work", ignore_errors=True)
    return result


def trials_csv(rows: list[dict]) -> str:
    keys = sorted({k for r in rows for k in r["knobs"]})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["trial", "state", "val_accuracy_mean", "val_accuracy_per_fold", *keys])
    for r in rows:
        w.writerow([r["trial"], r["state"], r["val_accuracy_mean"], json.dumps(r["val_accuracy"]),
                    *(r["knobs"].get(k, "") for k in keys)])
    return buf.getvalue()


def apply(root: str | Path, result: dict) -> Params:
    """Write the winner's overrides into the project's params.yaml (validated first, as `--set` does)."""
    from augdag.params import write_overrides

    return write_overrides(Path(root) / "params.yaml", result["best"]["overrides"])
