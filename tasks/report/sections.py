"""What each section of the image report shows, read from the stage outputs: one function per section, each
returning the data its template (templates/sections/<id>.html.j2) lays out, or Missing when its input does
not exist yet. Numbers are formatted here, as text; the templates escape and place it.

A function may raise on an input that exists but cannot be read: the page then shows the error in that
section only (section() in __init__.py).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from markupsafe import Markup

from augdag import tracking
from augdag.layout import cycle_dir
from augdag.params import BRANCHES
from augdag.storage import MANIFEST, StageData, read_json, read_manifest, try_read_json
from augdag.tasks import STAGES, out_dir

from . import figures
from .status import STATUS_CLASS, secs

SCORE_NAMES = ("psnr", "ssim", "in_frame", "label_prob", "outlier_z")
CROSSDOMAIN = "crossdomain"  # the branch that translates into a target domain (tasks/crossdomain)


@dataclass(frozen=True)
class Missing:
    """The section's input does not exist yet: the section says "missing: {what}"."""
    what: str


def classes(root: Path) -> list[str] | None:
    c = read_json(out_dir(root, "ingest") / "classes.json")
    return list(c["classes"]) if c else None


def grid(data: StageData, rows, n: int, with_params: bool = False, reason: bool = False,
         linked: frozenset = frozenset()) -> list[dict]:
    """The first n rows as thumbnails (parts.html.j2's grid): id, image, the ops applied, the gate's reason."""
    figs = []
    for _, r in rows.head(n).iterrows():
        ops = None
        if with_params:
            q = json.loads(r.op_params or "{}")
            ops = (", ".join(o["op"] for o in q.get("ops", [])) or q.get("op")
                   or (f"translation {q['translation']}" if "translation" in q else None)
                   or ("latent" if "latent_seed" in q else "identity"))
        figs.append({"id": r.sample_id, "linked": r.sample_id in linked, "ops": ops,
                     "reason": r.reason if reason else None, "img": figures.png(data.image(r))})
    return figs


# -------------------------------------------------------------------------------------------- stages

def stages(root: Path, status: dict, timing: dict, detail: dict) -> dict:
    graph = figures.dag(status, timing)
    rows = []
    for s in STAGES:
        st, note = status[s]
        summary = try_read_json(out_dir(root, s) / "summary.json") if s != "report" else None
        where = summary.get("device") if isinstance(summary, dict) else None
        if where and isinstance(summary, dict) and summary.get("device_name"):
            where = f"{where} ({summary['device_name']})"
        rows.append({"stage": s, "status": st, "css": STATUS_CLASS[st], "note": note, "device": where or "",
                     "time": secs(timing.get(s)) + (f" ({detail[s]})" if detail.get(s) else ""),
                     "summary": None if summary is None else json.dumps(summary, sort_keys=True)})
    return {"graph": graph, "rows": rows, "show_times": any(t is not None for t in timing.values())}


# ------------------------------------------------------------------------------------------- dataset

def dataset(root: Path, source: str) -> dict | Missing:
    folder = out_dir(root, "ingest")
    if not (folder / MANIFEST).exists():
        return Missing("run the ingest stage")
    data = StageData(folder)
    m = data.manifest
    cls = classes(root) or [str(i) for i in range(int(m.label.max()) + 1)]
    splits = ("train", "val", "test")
    first = m.iloc[0]
    out = {"n_images": len(m), "split_counts": [(s, int((m.split == s).sum())) for s in splits],
           "shape": f"{int(first.height)}×{int(first.width)}×{int(first.channels)}", "source": source,
           "splits": splits, "classes": [], "rejected": None}
    if (folder / "rejected.csv").exists():  # ingest.on_bad_file: skip left these files out
        with open(folder / "rejected.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        out["rejected"] = {"count": len(rows), "rows": rows[:20]}
    for i, c in enumerate(cls):
        rows = m[m.label == i]
        pick = rows[rows.split == "train"] if (rows.split == "train").any() else rows
        example = None
        if len(pick):
            example = {"img": figures.png(data.image(pick.iloc[0])), "id": str(pick.iloc[0].sample_id)}
        out["classes"].append({"index": i, "name": c, "example": example,
                               "counts": [int((rows.split == s).sum()) for s in splits]})
    return out


# -------------------------------------------------------------------------------------- quality gate

def gate(root: Path, n: int, linked: frozenset) -> dict | Missing:
    """Pass rate per branch and check, score histograms, kept and rejected grids."""
    folder = out_dir(root, "quality")
    summary = read_json(folder / "summary.json")
    if summary is None or not (folder / "manifest.parquet").exists():
        return Missing("run the quality stage")
    kept = read_manifest(folder)
    rej_path = folder / "rejected.parquet"
    rejected = read_manifest(folder, rej_path.name) if rej_path.exists() else None
    table = []
    summary = {b: s for b, s in summary.items() if b in BRANCHES}  # and "device", shown with the other devices
    for branch, s in summary.items():
        rate = "–" if s.get("pass_rate") is None else f"{s['pass_rate']:.3f}"
        by = ", ".join(f"{k}: {v}" for k, v in (s.get("rejected_by") or {}).items()) or "–"
        means = ", ".join(f"{k} {v}" for k, v in (s.get("mean_scores") or {}).items()) or "–"
        table.append({"branch": branch, "rate": rate, "by": by, "means": means, "gate_in": s["in"], "kept": s["kept"],
                      "rejected": s["rejected"]})
    branches = []
    for branch in summary:
        bk = kept[kept.branch == branch]
        br = rejected[rejected.branch == branch] if rejected is not None else kept.iloc[0:0]
        if not len(bk) + len(br):
            continue
        sk = [json.loads(x or "{}") for x in bk.scores]
        sr = [json.loads(x or "{}") for x in br.scores]
        hists = [figures.histogram([d[k] for d in sk if k in d], [d[k] for d in sr if k in d], k) for k in SCORE_NAMES]
        part = {"name": branch, "histograms": [h for h in hists if h], "kept": None, "rejected": None}
        branches.append(part)
        if not (out_dir(root, branch) / MANIFEST).exists():
            continue  # no images to show
        data = StageData(out_dir(root, branch))
        by_id = data.manifest.set_index("sample_id", drop=False)
        part["kept"] = grid(data, by_id.loc[bk.sample_id.head(n)], n, True, linked=linked)
        if len(br):
            rows = by_id.loc[br.sample_id.head(n)].assign(reason=list(br.gate_reason.head(n)))
            part["rejected"] = grid(data, rows, n, True, reason=True, linked=linked)
    return {"table": table, "branches": branches}


def samples(root: Path, n: int, linked: frozenset) -> dict:
    """The first images of the raw train split and of each branch; the crossdomain branch only when it made
    samples (its own section says when it is off or missing, and shows each translation beside its source)."""
    parts = []
    for stage, title, params in (("ingest", "raw train", False), ("traditional", "traditional branch", True),
                                 ("mix", "mix branch", True), ("generative", "generative branch", True),
                                 (CROSSDOMAIN, "crossdomain branch", True)):
        folder = out_dir(root, stage)
        if not (folder / MANIFEST).exists():
            if stage != CROSSDOMAIN:
                parts.append({"title": title, "missing": f"run the {stage} stage", "figs": None})
            continue
        data = StageData(folder)
        if stage == CROSSDOMAIN and not len(data.manifest):
            continue
        rows = data.manifest[data.manifest.split == "train"] if stage == "ingest" else data.manifest
        parts.append({"title": title, "missing": None, "figs": grid(data, rows, n, with_params=params, linked=linked)})
    return {"parts": parts}


# ------------------------------------------------------------------------------------------ crossdomain

def _gate_of(root: Path, branch: str) -> dict[str, tuple[str, str, dict]]:
    """sample id -> (gate decision, reason, scores) for one branch's samples in the quality gate's manifests
    (empty when the gate has not run)."""
    folder = out_dir(root, "quality")
    out: dict[str, tuple[str, str, dict]] = {}
    for name in (MANIFEST, "rejected.parquet"):
        if (folder / name).exists():
            q = read_manifest(folder, name)
            q = q[q.branch == branch]
            for sid, g, why, sc in zip(q.sample_id, q.gate, q.gate_reason, q.scores):
                out[sid] = (str(g), why if isinstance(why, str) else "", json.loads(sc or "{}"))
    return out


def crossdomain(root: Path, n: int, linked: frozenset) -> dict | Missing:
    """The crossdomain branch: its summary (target images, training time, cycle PSNR/SSIM, final losses) and the
    first n samples as triples: the source a (the raw parent), the translation G(a), the reconstruction F(G(a)),
    with the gate's psnr/ssim of each (a against F(G(a)), what the gate checks) where the gate scored it."""
    folder = out_dir(root, CROSSDOMAIN)
    summary = read_json(folder / "summary.json")
    if summary is None:
        return Missing("run the crossdomain stage")
    if not summary.get("enabled"):
        return {"off": True, "summary": None, "losses": None, "triples": None}
    num = lambda k, spec: "–" if summary.get(k) is None else format(summary[k], spec)  # noqa: E731
    out = {"off": False, "summary": {
        "samples": summary.get("samples", 0), "target_images": summary.get("target_images", "–"),
        "cycle_psnr": num("cycle_psnr", ".2f"), "cycle_ssim": num("cycle_ssim", ".3f"),
        "generator": str(summary.get("generator_hash") or "–")[:16]}}
    losses = summary.get("losses") or {}
    out["losses"] = ", ".join(f"{k} {_num(v)}" for k, v in losses.items()) or None
    data = StageData(folder)
    rows = data.manifest.head(n)
    if not len(rows):
        out["triples"] = []
        return out
    raw = StageData(out_dir(root, "ingest"))
    parents = [ps[0] for ps in rows.parent_ids]
    sources = raw.images_of(raw.lookup(parents, ["sample_id", "shard", "index", "height", "width", "channels"]))
    fakes = data.images(rows)
    recs = StageData(cycle_dir(root), manifest=False).images(rows)  # at the sample's shard and index
    gate = _gate_of(root, CROSSDOMAIN)
    out["triples"] = []
    for sid, parent, a, b, c in zip(rows.sample_id, parents, sources, fakes, recs):
        decision, reason, sc = gate.get(sid, (None, "", {}))
        scores = ", ".join(f"{k} {_num(sc[k])}" for k in ("psnr", "ssim") if k in sc)
        out["triples"].append({"id": sid, "parent": parent, "linked": sid in linked,
                               "source": figures.png(a), "translation": figures.png(b),
                               "reconstruction": figures.png(c), "scores": scores or "–",
                               "gate": "not gated" if decision is None else decision + (f": {reason}" if reason
                                                                                       else "")})
    return out


# ----------------------------------------------------------------------------- training / evaluation

def _csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _wide(rows: list[dict]) -> list[dict]:
    """weights.csv in long form (step, source, weight, feedback) as one row per step: w_<source>, feedback_<source>."""
    if not rows or "source" not in rows[0]:
        return rows
    by: dict[str, dict] = {}
    for r in rows:
        d = by.setdefault(r["step"], {"step": r["step"]})
        d[f"w_{r['source']}"], d[f"feedback_{r['source']}"] = r.get("weight"), r.get("feedback")
    return list(by.values())


def _num(v) -> str:
    try:
        return f"{float(v):.3f}"
    except (TypeError, ValueError):
        return "–"


def training(root: Path) -> dict | Missing:
    """Steps and sampling, the training curve, the source weights (and the feedback behind them)."""
    folder = out_dir(root, "finetune")
    summary = read_json(folder / "summary.json")
    curve = folder / tracking.CURVE_DIR
    if summary is None and not curve.exists():
        return Missing("run the finetune stage")
    out = {"intro": None, "feedback": None}
    if summary:
        s = summary.get("sampling") or {}
        out["intro"] = {"steps": summary.get("steps"), "samples": summary.get("samples"),
                        "mode": str(s.get("mode", "–")),
                        "weights": ", ".join(f"{k} {v:.3f}" for k, v in s["final_weights"].items())
                        if s.get("final_weights") else None}
    out["curve"] = (figures.curve_chart(tracking.read_curve(curve)) if curve.exists()
                    else f"missing: {tracking.CURVE_DIR}/ (run the finetune stage)")
    wpath = folder / "weights.csv"
    if not wpath.exists():
        out["weights"] = "missing: weights.csv (run the finetune stage)"
        return out
    rows = _wide(_csv(wpath))
    keys = [k for k in (rows[0] if rows else {}) if k.startswith("w_")]
    out["weights"] = figures.line_chart(rows, keys, "sampling weights", ymax=1.0) if keys else "no weights recorded"
    fb = [k for k in (rows[0] if rows else {}) if k.startswith("feedback_")]
    if fb and any(r.get(k) not in (None, "") for r in rows for k in fb):
        cols = keys + fb
        out["feedback"] = {"columns": cols,
                           "rows": [{"step": r["step"], "cells": [_num(r.get(k)) for k in cols]} for r in rows[:50]]}
    return out


def _shade(frac: float) -> str:
    return f"background:rgba(31,119,180,{0.08 + 0.8 * frac:.2f});color:{'#fff' if frac > 0.55 else '#222'}"


def evaluation(root: Path) -> dict | Missing:
    """Headline, accuracy per class, the confusion matrix, robustness per attack and epsilon; with target-domain
    metrics (evaluate.target_test), source and target accuracy and macro-F1 side by side, and per class."""
    folder = out_dir(root, "evaluate")
    metrics = read_json(folder / "metrics.json")
    if not metrics:
        return Missing("run the evaluate stage")
    out = {"headline": {"accuracy": f"{metrics['accuracy']:.4f}", "macro_f1": f"{metrics['macro_f1']:.4f}",
                        "n_test": metrics["n_test"]},
           "confusion": None, "robustness": None}
    per = metrics.get("per_class_accuracy") or {}
    order = [c for c in (classes(root) or []) if c in per]
    per = {c: per[c] for c in order + [c for c in per if c not in order]}  # in class-index order
    out["per_class"] = [{"name": c, "accuracy": f"{a:.3f}", "bar": f"{160 * a:.0f}"} for c, a in per.items()]
    target = metrics.get("target")
    out["domains"] = None
    if isinstance(target, dict):  # evaluate.target_test: the same scores on a labelled target-domain folder
        out["domains"] = [
            {"name": "source (test split)", "accuracy": out["headline"]["accuracy"],
             "macro_f1": out["headline"]["macro_f1"], "n": metrics["n_test"]},
            {"name": "target (evaluate.target_test)", "accuracy": f"{target['accuracy']:.4f}",
             "macro_f1": f"{target['macro_f1']:.4f}", "n": target.get("n_test", "–")}]
        tper = target.get("per_class_accuracy") or {}
        for c in out["per_class"]:
            a = tper.get(c["name"])
            c["target"] = None if a is None else {"accuracy": f"{a:.3f}", "bar": f"{160 * a:.0f}"}
    conf = read_json(folder / "confusion.json")
    if conf:
        mat = np.asarray(conf["matrix"], dtype=float)
        rows = np.maximum(mat.sum(1, keepdims=True), 1)
        out["confusion"] = {"classes": conf["classes"], "rows": [
            {"name": c, "cells": [{"style": _shade(v / rows[i, 0]), "n": int(v)} for v in mat[i]]}
            for i, c in enumerate(conf["classes"])]}
    rob = metrics.get("robustness")
    if rob:
        attacks = [a for a in rob if isinstance(rob[a], dict)]
        eps = sorted({e for a in attacks for e in rob[a]}, key=float)
        clean = f"{rob.get('clean', float('nan')):.3f}"
        out["robustness"] = {"n": rob.get("n"), "clean": clean, "eps": eps, "attacks": [
            {"name": a.upper(), "cells": [_num(rob[a].get(e)) for e in eps]} for a in attacks]}
    return out


def comparison(root: Path) -> dict | Missing:
    """Strategy comparison (augdag compare): mean and 95% CI per strategy, from data/compare/."""
    folder = Path(root) / "data" / "compare"
    data = read_json(folder / "comparison.json")
    if not data or not data.get("strategies"):
        return Missing("run augdag compare")
    b = data.get("baseline", "none")
    pct = lambda m, ci: "–" if m is None else f"{100 * m:.1f}" + ("" if ci is None else f" ± {100 * ci:.1f}")
    out = {"best": str(data.get("best_on_validation")), "baseline": b, "rows": [], "svg": None}
    for name, m in data["strategies"].items():
        diff = m.get(f"diff_vs_{b}")
        dtxt = "–" if diff is None else f"{100 * diff:+.1f}" + (
            "" if m.get(f"diff_vs_{b}_ci95") is None else f" ± {100 * m[f'diff_vs_{b}_ci95']:.1f}")
        better = "–" if diff is None else f"{m.get(f'seeds_better_vs_{b}')}/{m.get(f'seeds_paired_vs_{b}')}"
        out["rows"].append({"name": name, "diff": dtxt, "better": better, "n": m.get("n"),
                            "test": pct(m.get("test_mean"), m.get("test_ci95")),
                            "val": pct(m.get("val_mean"), m.get("val_ci95"))})
    svg = folder / "comparison.svg"
    if svg.exists():
        text = svg.read_text(encoding="utf-8")
        if text.lstrip().startswith("<svg") and "<script" not in text.lower():  # only our own plain SVG
            out["svg"] = Markup(text)
    return out


def _knob(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def search(root: Path) -> dict | Missing:
    """Strategy search (augdag tune): every trial's validation folds and knobs, and the winner, from data/tune/."""
    data = read_json(Path(root) / "data" / "tune" / "tune.json")
    if not data or not data.get("rows") or not data.get("best"):
        return Missing("run augdag tune")
    keys = sorted({k for r in data["rows"] for k in r.get("knobs", {})})
    best = data["best"]
    rows = [{"trial": r["trial"], "state": r["state"], "best": r["trial"] == best["trial"],
             "mean": f"{100 * r['val_accuracy_mean']:.1f}",
             "folds": ", ".join(f"{100 * v:.1f}" for v in r["val_accuracy"]),
             "knobs": [_knob(r["knobs"].get(k, "–")) for k in keys]} for r in data["rows"]]
    return {"trials": data["trials"], "pruned": data["pruned"], "folds": data["folds"],
            "fold_seeds": ", ".join(map(str, data.get("fold_seeds", []))), "sampler": data.get("sampler"),
            "seconds": data.get("seconds"), "keys": keys, "rows": rows, "best": best["trial"],
            "best_mean": f"{100 * best['val_accuracy_mean']:.1f}", "set": best.get("set", [])}
