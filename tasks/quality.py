"""Quality gate: scores every augmented sample, then keeps, warns about or rejects it.

Per branch: strategy-aware PSNR/SSIM against the source (see augdag/gate.py), the reference
classifier's probability of the label, and the sliding-window outlier z; then the branch suite
(expectations/branch.json) runs through Great Expectations with one mode per check (filter, warn,
fail, off; the suite's defaults, overridden by params quality.modes; a null threshold turns its
check off). Kept rows go to manifest.parquet, filtered ones to rejected.parquet with the names of
the checks they failed; both carry their scores. Rows point at their branch's shards; no image is
copied. Validation results (JSON) and GE Data Docs go to data/validation/quality/.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from augdag import gate, gx
from augdag.errors import ParamsError
from augdag.log import Progress, logger
from augdag.params import BRANCHES, Params
from augdag.seeding import derive_seed
from augdag.storage import StageData, atomic_dir, write_json, write_manifest
from augdag.tasks import out_dir
from augdag.tasks.finetune import targets
from augdag.tasks.ingest import EXPECTATIONS, classes

SUITE = EXPECTATIONS / "branch.json"
SCORES = ("psnr", "ssim", "in_frame", "label_prob", "outlier_z")
THRESHOLD_CHECKS = {"psnr": "psnr", "ssim": "ssim", "in_frame": "in_frame", "label_prob": "label_consistency"}
CHUNK = 1024


def score_branch(branch: str, m: pd.DataFrame, data: StageData, raw: StageData, ref: gate.ReferenceClassifier,
                 progress: Progress | None = None) -> pd.DataFrame:
    """The branch manifest with the score columns and the derived columns the suite checks."""
    n_classes = ref.n_classes
    raw_train = raw.manifest[raw.manifest.split == "train"].set_index("sample_id")
    cols = {k: np.full(len(m), np.nan) for k in SCORES}
    for start in range(0, len(m), CHUNK):
        rows = m.iloc[start:start + CHUNK]
        sl = slice(start, start + len(rows))
        images = data.images(rows)
        cols["label_prob"][sl] = gate.label_prob(ref.proba(images), targets(rows, n_classes).numpy())
        params = [json.loads(s or "{}") for s in rows.op_params]
        if branch == "traditional":
            sources = np.stack([raw.image(raw_train.loc[r[0]]) for r in rows.parent_ids])
            s = gate.traditional_scores(sources, images, [q.get("ops", []) for q in params])
            for k in ("psnr", "ssim", "in_frame"):
                cols[k][sl] = s[k]
        elif branch == "mix":
            a = np.stack([raw.image(raw_train.loc[r[0]]) for r in rows.parent_ids])
            b = np.stack([raw.image(raw_train.loc[r[1]]) for r in rows.parent_ids])
            s = gate.mix_scores(a, b, images, np.array([q["lam"] for q in params]))
            cols["psnr"][sl], cols["ssim"][sl] = s["psnr"], s["ssim"]
        if progress:
            progress.update(len(rows))
    out = m.copy()
    for k in ("psnr", "ssim", "in_frame", "label_prob"):
        out[k] = cols[k]
    out["soft_label_sum"] = gate.soft_label_sum(m.soft_label)
    known = set(raw_train.index)
    out["parents_in_raw"] = [all(pid in known for pid in (ps if ps is not None else [])) for ps in m.parent_ids]
    return out


def reference_rows(train: pd.DataFrame, per_class: int | None, seed: int) -> pd.DataFrame:
    """The raw train rows the reference classifier learns from: all of a class with at most `per_class` rows,
    else the `per_class` rows of lowest derive_seed(seed, "quality-reference", sample_id), in manifest order.

    The features of 60,000 images are 0.6 GB in float64 and the probe's L-BFGS holds two more copies; a linear
    probe does not need them all, and the choice depends on the ids only (not on order or worker count).
    """
    if per_class is None or not len(train) or train.label.value_counts().max() <= per_class:
        return train
    key = np.array([derive_seed(seed, "quality-reference", s) for s in train.sample_id], dtype=np.uint64)
    labels = train.label.to_numpy()
    order = np.lexsort((key, labels))  # by class, then by key
    starts = np.searchsorted(labels[order], labels[order], side="left")
    keep = np.zeros(len(train), bool)
    keep[order[np.arange(len(order)) - starts < per_class]] = True
    return train[keep]


def _checks(p: Params, branch: str) -> tuple[dict, dict]:
    """(suite parameters, modes) for one branch: a null threshold or outlier score turns its check off."""
    th = getattr(p.quality.thresholds, branch)
    params, modes = {}, gx.modes_for(SUITE, p.quality.modes)
    for score, check in THRESHOLD_CHECKS.items():
        value = getattr(th, score)
        params[f"{score}_min"] = 0.0 if value is None else value
        if value is None:
            modes[check] = "off"
    sigma = p.quality.outlier.sigma
    params.update(sigma=sigma, sigma_low=-sigma)
    if p.quality.outlier.score.get(branch) is None:
        modes["outlier"] = "off"
    return params, modes


GATE_SUITES = ("branch.json", "merged.json", "merged_classes.json", "text_branch.json")


def check_mode_names(p: Params) -> None:
    """Every name in quality.modes must be a check of one of the gate's suites."""
    known = set().union(*(gx.check_names(EXPECTATIONS / s) for s in GATE_SUITES))
    unknown = sorted(set(p.quality.modes) - known)
    if unknown:
        raise ParamsError(f"params.yaml: quality.modes: unknown check name(s) {unknown}; "
                          f"checks: {', '.join(sorted(known))}")


def _scores_json(frame: pd.DataFrame) -> list[str]:
    """Per row, the JSON of its non-missing scores (rounded to 6 digits), column-wise."""
    cols = {k: frame[k].to_numpy(np.float64) for k in SCORES}
    return [json.dumps({k: round(float(cols[k][i]), 6) for k in SCORES if not np.isnan(cols[k][i])}, sort_keys=True)
            for i in range(len(frame))]


def run(p: Params, root: Path, **_) -> dict:
    log = logger()
    check_mode_names(p)
    names = classes(root)
    raw = StageData(out_dir(root, "ingest"))
    results = out_dir(root, "validation") / "quality"
    results.mkdir(parents=True, exist_ok=True)
    manifests = {b: StageData(out_dir(root, b)) for b in BRANCHES}
    total = sum(len(d.manifest) for d in manifests.values())
    ref = None
    if total:
        train = reference_rows(raw.manifest[raw.manifest.split == "train"], p.quality.reference_max_per_class, p.seed)
        log.info("quality: reference classifier on %d raw train images", len(train))
        ref = gate.ReferenceClassifier(raw.images(train), train.label.to_numpy(dtype=np.int64), len(names),
                                       image_size=p.quality.reference_image_size)
    progress = Progress("quality", total)
    kept, rejected, summary = [], [], {}
    for branch in BRANCHES:
        data = manifests[branch]
        m = data.manifest
        if not len(m):
            summary[branch] = {"in": 0, "kept": 0, "rejected": 0, "pass_rate": None, "checks": {}}
            continue
        frame = score_branch(branch, m, data, raw, ref, progress)
        watch = p.quality.outlier.score.get(branch)
        frame["outlier_z"] = gate.window_z(frame[watch].to_numpy(np.float64), p.quality.outlier.window_size) \
            if watch else np.nan
        params, modes = _checks(p, branch)
        k, r, summary[branch] = gate_branch(branch, frame, SUITE, {"label_set": list(range(len(names))), **params},
                                            modes, results, SCORES, _scores_json)
        kept.append(k)
        rejected.append(r)
    return write_gate(root, kept, rejected, summary, results)


def gate_branch(branch: str, frame: pd.DataFrame, suite: Path, params: dict, modes: dict, results: Path,
                scores: tuple[str, ...], scores_json) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """One branch's scored frame through its suite: (kept rows, rejected rows, the branch's summary)."""
    result = gx.gate_frame(frame, suite, params, modes=modes, results_path=results / f"{branch}.json")
    for w in result.warnings:
        logger().warning("quality %s: %s", branch, w.line())
    k, r = result.kept.copy(), result.rejected.copy()
    for part, status in ((k, "kept"), (r, "rejected")):
        part["gate"] = status
        part["scores"] = scores_json(part)
    k["gate_reason"] = ""
    return k, r, {
        "in": len(frame), "kept": len(k), "rejected": len(r), "pass_rate": round(len(k) / len(frame), 6),
        "rejected_by": {name: sum(name in reason.split("; ") for reason in r.gate_reason)
                        for name, c in result.checks.items() if c["mode"] == "filter"},
        "checks": result.checks,
        "mean_scores": {s: round(float(frame[s].mean()), 4) for s in scores if frame[s].notna().any()},
    }


def write_gate(root: Path, kept: list, rejected: list, summary: dict, results: Path) -> dict:
    """Data Docs for the branches' results, then data/quality: manifest, rejected, summary and metrics."""
    log = logger()
    docs = None
    if any(summary[b]["in"] for b in BRANCHES):
        try:
            docs = gx.build_data_docs(results, out_dir(root, "validation") / "quality-docs")
        except Exception as err:  # Data Docs are a view; a rendering failure must not drop the gate's results
            log.warning("quality: GE Data Docs not built: %s", err)
    metrics = {b: {k: summary[b][k] for k in ("in", "kept", "rejected", "pass_rate")} for b in BRANCHES}
    with atomic_dir(out_dir(root, "quality")) as tmp:
        write_manifest(tmp / "manifest.parquet", pd.concat(kept, ignore_index=True) if kept else [])
        write_manifest(tmp / "rejected.parquet", pd.concat(rejected, ignore_index=True) if rejected else [])
        write_json(tmp / "summary.json", summary)
        write_json(tmp / "metrics.json", metrics)
    log.info("quality: %s%s", json.dumps(metrics), f"; Data Docs: {docs}" if docs else "")
    return {b: {k: summary[b][k] for k in ("in", "kept", "rejected")} for b in BRANCHES}
