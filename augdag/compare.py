"""Compare augmentation strategies over seeds: one implementation for `augdag compare`, its Prefect flow
(flows/compare.py), the DVC stage in compare/dvc.yaml and bench/seeds.py.

A run resolves (params.yaml, strategy, seed) to Params, runs the stages ingest..evaluate with the stage
functions in a scratch folder, keeps a small record (test and final validation accuracy, gate pass
rates, timings) and deletes the scratch data. Records are cached per params hash, so a comparison that
stopped half way resumes, and a changed param reruns only what it changes.

Defaults are to be chosen on validation accuracy (`best_on_validation`); test accuracy is reported.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import html
import io
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from augdag.errors import AugdagError
from augdag.params import Params, deep_merge, parse_params
from augdag.storage import read_json, write_json, write_text

# --- strategies -----------------------------------------------------------------------------------

OFF = ("psnr", "ssim", "label_consistency", "outlier")  # the quality gate's filter checks
NOGATE = {"quality": {"modes": {c: "off" for c in OFF}}}
GATED = {"quality": {"modes": {c: "filter" for c in OFF}}}


def _branches(traditional: int = 0, mix: int = 0, generative: int = 0, crossdomain: int = 0) -> dict:
    """Every branch pinned: on with that multiplier, or off. Online augmentation pinned off too, so a
    strategy means the same thing whatever params.yaml turns on (the text classifier's knowledge-graph
    enrichment too; with params.yaml's defaults the pinned values are the defaults, so this resolves exactly
    as bench/seeds.py's shorter overrides did)."""
    plan = {name: ({"enabled": True, "multiplier": m} if m else {"enabled": False, "multiplier": 1})
            for name, m in (("traditional", traditional), ("mix", mix), ("generative", generative),
                            ("crossdomain", crossdomain))}
    return deep_merge(GATED, {"strategy": plan,
                              "finetune": {"online_mix": {"enabled": False}, "online_augment": "none"},
                              "text": {"kg": {"embed_weight": 0.0}}})


def _gate(*on: str) -> dict:
    """Traditional branch with only the named filter checks of the quality gate on."""
    return deep_merge(_branches(traditional=1), {"quality": {"modes": {c: "off" for c in OFF if c not in on}}})


STRATEGIES: dict[str, dict] = {
    "none": _branches(),
    "traditional": _branches(traditional=1),
    "traditional_x4": _branches(traditional=4),
    "mix": _branches(mix=1),
    "mixup_offline": deep_merge(_branches(mix=1), {"mix": {"mode": "mixup"}}),
    "cutmix_offline": deep_merge(_branches(mix=1), {"mix": {"mode": "cutmix"}}),
    "mixup_online": deep_merge(_branches(), {"finetune": {"online_mix": {"enabled": True, "mode": "mixup"}}}),
    "cutmix_online": deep_merge(_branches(), {"finetune": {"online_mix": {"enabled": True, "mode": "cutmix"}}}),
    "generative": _branches(generative=1),
    "all": _branches(traditional=1, mix=1, generative=1),
    # the cross-domain branch needs crossdomain.target in params.yaml (and evaluate.target_test to measure it)
    "crossdomain": _branches(crossdomain=1),
    "crossdomain_traditional": _branches(traditional=1, crossdomain=1),
    "trivial_augment_wide": deep_merge(_branches(), {"finetune": {"online_augment": "trivial_augment_wide"}}),
    "randaugment": deep_merge(_branches(), {"finetune": {"online_augment": "randaugment"}}),
    "augmix": deep_merge(_branches(), {"finetune": {"online_augment": "augmix"}}),
    "params": {},  # params.yaml as it stands (e.g. after `augdag tune --apply`)
    # consistency training (FixMatch) on params.yaml's unlabelled pool, else UNLABELLED_PER_CLASS (resolve)
    "fixmatch": deep_merge(_branches(), {"finetune": {"consistency": {"enabled": True}}}),
    "fixmatch_trivial": deep_merge(_branches(), {"finetune": {"consistency": {"enabled": True},
                                                              "online_augment": "trivial_augment_wide"}}),
    # texts (modality: text): knowledge-graph enrichment of the classifier's embedding (the source document's
    # weight 0.3), and the traditional branch with the entity rewrite alone (docs/text.md)
    "kg_embed": deep_merge(_branches(), {"text": {"kg": {"embed_weight": 0.3}}}),
    "kg_rewrite_x4": deep_merge(_branches(traditional=4), {"text": {"traditional": {"ops": {
        op: {"p": 1.0 if op == "entity" else 0.0} for op in ("entity", "synonym", "tfidf_replace", "insert",
                                                               "swap", "delete")}}}}),
    # simulated dialogues (text.dialogue's chain in params.yaml, e.g. configs/dialogue.yaml): the turn alone, the
    # turn with the previous one, and that on utterances through the traditional branch (docs/dialogue.md)
    "dialogue_ctx0": deep_merge(_branches(), {"text": {"dialogue": {"enabled": True, "context": 0}}}),
    "dialogue": deep_merge(_branches(), {"text": {"dialogue": {"enabled": True, "context": 1}}}),
    "dialogue_traditional": deep_merge(_branches(traditional=1), {"text": {"dialogue": {"enabled": True,
                                                                                          "context": 1}}}),
    # clips (modality: audio): the traditional branch's waveform ops alone, SpecAugment alone (docs/audio.md)
    "audio_waveform": deep_merge(_branches(traditional=1), {"audio": {"traditional": {"ops": {
        op: {"p": 0.0} for op in ("time_warp", "freq_mask", "time_mask")}}}}),
    "specaugment": deep_merge(_branches(traditional=1), {"audio": {"traditional": {"ops": {
        **{op: {"p": 0.0} for op in ("shift", "gain", "speed", "pitch", "noise")},
        "time_warp": {"p": 0.5}, "freq_mask": {"p": 1.0}, "time_mask": {"p": 1.0}}}}}),
    "traditional_nogate": _gate(),
    "traditional_gate": _gate(*OFF),
    "traditional_gate_psnr_ssim": _gate("psnr", "ssim"),
    "traditional_gate_label": _gate("label_consistency"),
    "traditional_gate_outlier": _gate("outlier"),
}
# The other branches with every filter check off; their gated form is the plain strategy name.
STRATEGIES.update({f"{name}_nogate": deep_merge(STRATEGIES[name], NOGATE)
                   for name in ("mix", "mixup_offline", "cutmix_offline", "generative", "all", "crossdomain",
                                "crossdomain_traditional")})

# Unlabelled images per class a consistency strategy draws when params.yaml has none (a small folder sets
# its own ingest.n_unlabelled_per_class instead, as many as its classes have to spare).
UNLABELLED_PER_CLASS = 200
COMPARISON = ["none", "traditional", "mix", "generative", "all", "all_nogate", "trivial_augment_wide"]
SEEDS = [0, 1, 2, 3, 4]
STAGES = ["ingest", "strategy", "traditional", "mix", "generative", "crossdomain", "quality", "merge", "dialogue",
          "finetune", "evaluate"]


def check_strategies(names: Iterable[str]) -> list[str]:
    names = list(names)
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        raise AugdagError(f"unknown strategies {unknown}; known: {', '.join(STRATEGIES)}")
    if len(set(names)) != len(names):
        raise AugdagError(f"strategies listed twice: {names}")
    return names


def resolve(base: dict, strategy: str, seed: int, extra: dict | None = None) -> Params:
    """params.yaml (as a dict) + the strategy's overrides + the seed (+ `extra`, applied last)."""
    check_strategies([strategy])
    over = STRATEGIES[strategy]
    if (over.get("finetune", {}).get("consistency", {}).get("enabled")
            and not ((base or {}).get("ingest") or {}).get("n_unlabelled_per_class")):
        over = deep_merge(over, {"ingest": {"n_unlabelled_per_class": UNLABELLED_PER_CLASS}})
    data = deep_merge(deep_merge(base or {}, over), {"seed": seed})
    if extra:
        data = deep_merge(data, extra)
    return parse_params(data, f"params for strategy {strategy!r}, seed {seed}")


def load_base(root: str | Path) -> dict:
    """The project's params.yaml as a dict, read leniently: a `compare:` section is dropped (it is not a
    stage section); everything else is validated when a strategy is resolved."""
    import yaml

    path = Path(root) / "params.yaml"
    if not path.exists():
        raise AugdagError(f"{path}: params file not found")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise AugdagError(f"{path}: the top level must be a mapping")
    data.pop("compare", None)
    return data


def params_hash(params: Params) -> str:
    """sha256 of the resolved params' canonical JSON, without `runner` (where the work runs never changes a
    byte of the outputs, so a record made on Dask serves a local comparison and the other way round) and
    with `quality.modes` entries equal to the suites' defaults dropped."""
    data = params.model_dump(mode="json", exclude={"runner"})
    defaults = _suite_modes()
    # A mode set to the suite's own default is the same gate as no entry: both hash alike.
    data["quality"]["modes"] = {k: v for k, v in data["quality"]["modes"].items() if defaults.get(k) != v}
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()


@functools.cache
def _suite_modes() -> dict[str, str]:
    from augdag import checks

    return checks.default_modes()


# --- running --------------------------------------------------------------------------------------

def _absolute_paths(params: Params, base_dir: Path) -> Params:
    """Relative file paths in params.yaml mean the project folder; a scratch run must not see them
    relative to wherever the process happens to run."""
    d = params.model_dump(mode="json")

    def fix(v):
        return str((base_dir / v).resolve()) if v and not Path(v).is_absolute() else v

    if d["ingest"]["source"] != "fashion-mnist":
        d["ingest"]["source"] = fix(d["ingest"]["source"])
    d["generative"]["checkpoint"] = fix(d["generative"]["checkpoint"])
    d["generative"]["diffusers"]["path"] = fix(d["generative"]["diffusers"]["path"])
    d["merge"]["extra_sources"] = {k: fix(v) for k, v in d["merge"]["extra_sources"].items()}
    d["crossdomain"]["target"] = fix(d["crossdomain"]["target"])
    d["evaluate"]["target_test"] = fix(d["evaluate"]["target_test"])
    t = d["text"]
    from augdag.text.params import BUILTIN_SOURCES

    if t["ingest"]["source"] not in BUILTIN_SOURCES:
        t["ingest"]["source"] = fix(t["ingest"]["source"])
    t["generative"]["paraphrase"]["model_path"] = fix(t["generative"]["paraphrase"]["model_path"])
    t["generative"]["marian"] = {k: fix(v) for k, v in t["generative"]["marian"].items()}
    t["finetune"]["encoder_path"] = fix(t["finetune"]["encoder_path"])
    return parse_params(d)


def in_scratch(params: Params, root: Path, stages: list[str], base_dir: str | Path, read: Callable) -> Any:
    """Run `stages` for `params` in the scratch folder `root`, return read(root, stage_seconds, seconds) and
    delete the folder, finished or not. `base_dir` is where relative paths in the params point (the project)."""
    from augdag.tasks import run_stage

    if root.exists():
        shutil.rmtree(root)
    run_params = _absolute_paths(params, Path(base_dir).resolve())
    t0 = time.monotonic()
    stage_seconds = {}
    try:
        for stage in stages:
            t = time.monotonic()
            run_stage(stage, run_params, root)
            stage_seconds[stage] = round(time.monotonic() - t, 1)
        return read(root, stage_seconds, round(time.monotonic() - t0, 1))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_one(params: Params, strategy: str, seed: int, workdir: str | Path, base_dir: str | Path | None = None) -> dict:
    """Run ingest..evaluate for one (strategy, seed) in a scratch folder under `workdir`, return its record
    and delete the scratch data. `base_dir` is where relative paths in the params point (the project)."""
    h = params_hash(params)
    return in_scratch(params, Path(workdir) / f"{strategy}-seed{seed}-{h[:12]}", STAGES, base_dir or Path.cwd(),
                      lambda root, stage_seconds, seconds: record_from_folder(root, strategy, seed, h, stage_seconds,
                                                                              seconds))


def record_from_folder(root: str | Path, strategy: str, seed: int, h: str, stage_seconds: dict,
                       seconds: float) -> dict:
    """The record of a finished run from its folder (data/evaluate, data/finetune, data/quality)."""
    data = Path(root) / "data"
    metrics = read_json(data / "evaluate" / "metrics.json")
    if metrics is None:
        raise AugdagError(f"{data / 'evaluate' / 'metrics.json'}: missing; the run did not finish")
    final = read_json(data / "finetune" / "summary.json") or {}
    gate = read_json(data / "quality" / "summary.json") or {}
    pass_rate = {b: v.get("pass_rate", 1.0 if v.get("kept") == v.get("in") else None) for b, v in gate.items()
                 if isinstance(v, dict) and v.get("in")}
    xd = read_json(data / "crossdomain" / "summary.json") if (data / "crossdomain").is_dir() else None
    translation = None
    if xd and xd.get("samples"):  # the CycleGAN's figures, and which gate checks rejected its translations
        translation = {k: xd[k] for k in ("cycle_psnr", "cycle_ssim", "losses") if k in xd}
        translation["seconds"] = stage_seconds.get("crossdomain")  # training and translating
        translation["rejected_by"] = (gate.get("crossdomain") or {}).get("rejected_by", {})
    dialogue = (read_json(data / "evaluate" / "summary.json") or {}).get("dialogue")
    return {"strategy": strategy, "seed": seed, "params_hash": h,
            "test_accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "target_accuracy": (metrics.get("target") or {}).get("accuracy"),
            "val_accuracy": final.get("val_accuracy"), "val_loss": final.get("val_loss"),
            "robustness": metrics.get("robustness"), "gate_pass_rate": pass_rate,
            "stage_seconds": stage_seconds, "seconds": seconds,
            **({"crossdomain": translation} if translation else {}),
            **({"dialogue": dialogue} if dialogue else {})}


def record_path(out: str | Path, strategy: str, seed: int, h: str) -> Path:
    return Path(out) / "runs" / f"{strategy}-seed{seed}-{h[:12]}.json"


def cached(out: str | Path, strategy: str, seed: int, params: Params) -> dict | None:
    """The cached record of exactly these params, or None."""
    h = params_hash(params)
    path = record_path(out, strategy, seed, h)
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if rec.get("params_hash") == h else None


def run_cached(params: Params, strategy: str, seed: int, out: str | Path, base_dir: str | Path | None = None,
               force: bool = False) -> tuple[dict, bool]:
    """The record for (params, strategy, seed): from `<out>/runs/` when there, else run and cache it.
    Returns (record, ran)."""
    if not force:
        rec = cached(out, strategy, seed, params)
        if rec is not None:
            return rec, False
    rec = run_one(params, strategy, seed, Path(out) / "work", base_dir)
    write_json(record_path(out, strategy, seed, rec["params_hash"]), rec)
    try:
        (Path(out) / "work").rmdir()  # only when empty: another process may be running there
    except OSError:
        pass
    return rec, True


# --- statistics -----------------------------------------------------------------------------------

def _stats(values: list[float]) -> dict:
    """n, mean, sample std and the Student-t 95% CI half-width of the mean (None for n < 2)."""
    from scipy import stats

    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci95": None, "lo": None, "hi": None}
    mean = math.fsum(values) / n
    if n < 2:
        return {"n": 1, "mean": mean, "std": None, "ci95": None, "lo": None, "hi": None}
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "std": sd, "ci95": half, "lo": mean - half, "hi": mean + half}


def aggregate(records: Iterable[dict], baseline: str = "none") -> dict:
    """Per strategy (in first-seen order): test and validation accuracy stats over its seeds, and the
    paired difference of test accuracy against `baseline` on the seeds both have (with its own t CI and
    how many seeds were better). `best_on_validation`: the strategy with the highest mean validation
    accuracy, the one to pick as a default (test accuracy must not choose)."""
    by: dict[str, dict[int, dict]] = {}
    for r in records:
        by.setdefault(r["strategy"], {})[int(r["seed"])] = r  # a later record of the same run wins
    base = by.get(baseline, {})
    out: dict[str, Any] = {"baseline": baseline, "strategies": {}, "best_on_validation": None}
    for name, runs in by.items():
        seeds = sorted(runs)
        test = [runs[s]["test_accuracy"] for s in seeds]
        val = [runs[s]["val_accuracy"] for s in seeds if runs[s].get("val_accuracy") is not None]
        entry = {"n": len(seeds), "seeds": seeds, "test": _stats(test), "val": _stats(val), "diff": None}
        target = [runs[s]["target_accuracy"] for s in seeds if runs[s].get("target_accuracy") is not None]
        if target:  # evaluate.target_test was set: the target domain's test accuracy, and its paired difference
            entry["target"], entry["target_diff"] = _stats(target), None
        if name != baseline:
            shared = [s for s in seeds if s in base]
            if shared:
                d = [runs[s]["test_accuracy"] - base[s]["test_accuracy"] for s in shared]
                entry["diff"] = {**_stats(d), "seeds": shared, "better": sum(x > 0 for x in d)}
            both = [s for s in shared if runs[s].get("target_accuracy") is not None
                    and base[s].get("target_accuracy") is not None]
            if target and both:
                d = [runs[s]["target_accuracy"] - base[s]["target_accuracy"] for s in both]
                entry["target_diff"] = {**_stats(d), "seeds": both, "better": sum(x > 0 for x in d)}
        out["strategies"][name] = entry
    ranked = [(e["val"]["mean"], name) for name, e in out["strategies"].items() if e["val"]["mean"] is not None]
    if ranked:
        best = max(v for v, _ in ranked)
        out["best_on_validation"] = next(name for v, name in ranked if v == best)
    return out


# --- writers --------------------------------------------------------------------------------------

def _r(v, nd: int = 6):
    return None if v is None else round(float(v), nd)


def metrics_dict(agg: dict) -> dict:
    """comparison.json: flat per-strategy numbers, as `dvc metrics show` lists them."""
    b = agg["baseline"]
    strategies = {}
    for name, e in agg["strategies"].items():
        row = {"n": e["n"], "test_mean": _r(e["test"]["mean"]), "test_std": _r(e["test"]["std"]),
               "test_ci95": _r(e["test"]["ci95"]), "val_mean": _r(e["val"]["mean"]), "val_std": _r(e["val"]["std"]),
               "val_ci95": _r(e["val"]["ci95"])}
        if e["diff"] is not None:
            row.update({f"diff_vs_{b}": _r(e["diff"]["mean"]), f"diff_vs_{b}_ci95": _r(e["diff"]["ci95"]),
                        f"seeds_better_vs_{b}": e["diff"]["better"], f"seeds_paired_vs_{b}": e["diff"]["n"]})
        if e.get("target"):
            row.update({"target_mean": _r(e["target"]["mean"]), "target_ci95": _r(e["target"]["ci95"])})
        if e.get("target_diff"):
            row.update({f"target_diff_vs_{b}": _r(e["target_diff"]["mean"]),
                        f"target_diff_vs_{b}_ci95": _r(e["target_diff"]["ci95"]),
                        f"target_seeds_better_vs_{b}": e["target_diff"]["better"]})
        strategies[name] = {k: v for k, v in row.items() if v is not None}
    return {"baseline": b, "best_on_validation": agg["best_on_validation"], "strategies": strategies}


def _pct(s: dict) -> str:
    if s["mean"] is None:
        return "–"
    return f"{100 * s['mean']:.1f}" + (f" ± {100 * s['ci95']:.1f}" if s["ci95"] is not None else "")


def _diff(d: dict | None) -> tuple[str, str]:
    if d is None:
        return "–", "–"
    txt = f"{100 * d['mean']:+.1f}" + (f" ± {100 * d['ci95']:.1f}" if d["ci95"] is not None else "")
    return txt, f"{d['better']}/{d['n']}"


def _has_target(agg: dict) -> bool:
    return any(e.get("target") for e in agg["strategies"].values())


def _table_rows(agg: dict) -> list[list[str]]:
    rows = []
    for name, e in agg["strategies"].items():
        diff, better = _diff(e["diff"])
        rows.append([name, str(e["n"]), _pct(e["test"]), _pct(e["val"]), diff, better])
        if _has_target(agg):
            none = {"mean": None}
            rows[-1] += [_pct(e.get("target") or none), *_diff(e.get("target_diff"))]
    return rows


def _headers(agg: dict) -> list[str]:
    head = ["strategy", "seeds", "test accuracy % (mean ± 95% CI)", "validation accuracy % (mean ± 95% CI)",
            f"test vs {agg['baseline']}, paired (mean ± 95% CI)", "seeds better"]
    if _has_target(agg):  # evaluate.target_test: the target domain's test set
        head += ["target-domain accuracy % (mean ± 95% CI)", f"target vs {agg['baseline']}, paired",
                 "seeds better (target)"]
    return head


def markdown(agg: dict) -> str:
    head = _headers(agg)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in _table_rows(agg)]
    best = agg["best_on_validation"]
    lines += ["", f"Best on validation: **{best}** (choose defaults by this; test accuracy is reported, not used "
                  "to choose)." if best else "No validation accuracy in these records (older records, or "
                                             "ingest.n_val_per_class is 0)."]
    lines.append("95% CI: Student t over seeds; paired: the same seeds with and without the strategy.")
    return "\n".join(lines) + "\n"


def table_rows(agg: dict) -> list[dict]:
    """One dict per strategy (Prefect's table artifact)."""
    return [dict(zip(_headers(agg), r)) for r in _table_rows(agg)]


def runs_csv(records: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["strategy", "seed", "test_accuracy", "val_accuracy", "target_accuracy"])
    for r in records:
        w.writerow([r["strategy"], r["seed"], r["test_accuracy"],
                    "" if r.get("val_accuracy") is None else r["val_accuracy"],
                    "" if r.get("target_accuracy") is None else r["target_accuracy"]])
    return buf.getvalue()


def svg(agg: dict, records: list[dict]) -> str:
    """Mean with 95% CI error bars per strategy (test blue, validation orange), each run a faint dot.
    Plain SVG: no scripts, no external references."""
    names = list(agg["strategies"])
    values = [100 * r[k] for r in records for k in ("test_accuracy", "val_accuracy") if r.get(k) is not None]
    for e in agg["strategies"].values():
        for s in (e["test"], e["val"]):
            values += [100 * v for v in (s["lo"], s["hi"]) if v is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 100.0)
    span = max(hi - lo, 1.0)
    lo, hi = max(lo - 0.08 * span, 0.0), min(hi + 0.08 * span, 100.0)
    if hi <= lo:
        lo, hi = max(hi - 1.0, 0.0), max(hi, 1.0)
    left, right, top, bottom = 56, 16, 40, 84
    pw = max(84 * len(names), 380)
    step = pw / max(len(names), 1)
    w, h = left + right + pw, 330
    ph = h - top - bottom
    sy = lambda v: top + ph * (hi - v) / (hi - lo)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
           f'role="img" aria-label="accuracy by strategy, mean with 95% CI" font-family="sans-serif">',
           f'<text x="{left}" y="16" font-size="12">accuracy %: mean ± 95% CI over seeds (dots: runs)</text>',
           f'<circle cx="{left + 6}" cy="27" r="4" fill="#1f77b4"/>'
           f'<text x="{left + 14}" y="31" font-size="11">test</text>',
           f'<circle cx="{left + 56}" cy="27" r="4" fill="#ff7f0e"/>'
           f'<text x="{left + 64}" y="31" font-size="11">validation</text>',
]
    for i in range(6):
        v = lo + (hi - lo) * i / 5
        y = sy(v)
        out.append(f'<line x1="{left - 4}" y1="{y:.1f}" x2="{w - right}" y2="{y:.1f}" stroke="#eee"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{v:.1f}</text>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#888"/>'
               f'<line x1="{left}" y1="{top + ph}" x2="{w - right}" y2="{top + ph}" stroke="#888"/>')
    by_name: dict[str, list[dict]] = {}
    for r in records:
        by_name.setdefault(r["strategy"], []).append(r)
    for i, name in enumerate(names):
        cx = left + step * i + step / 2
        e = agg["strategies"][name]
        for dx, key, s, color in ((-10, "test_accuracy", e["test"], "#1f77b4"),
                                  (10, "val_accuracy", e["val"], "#ff7f0e")):
            x = cx + dx
            for r in by_name.get(name, []):
                if r.get(key) is not None:
                    out.append(f'<circle cx="{x + 5:.1f}" cy="{sy(100 * r[key]):.1f}" r="2" fill="{color}" '
                               'opacity="0.35"/>')
            if s["mean"] is None:
                continue
            if s["ci95"] is not None:
                y1, y2 = sy(100 * s["lo"]), sy(100 * s["hi"])
                out.append(f'<line x1="{x:.1f}" y1="{y1:.1f}" x2="{x:.1f}" y2="{y2:.1f}" stroke="{color}" '
                           'stroke-width="1.5"/>'
                           f'<line x1="{x - 4:.1f}" y1="{y1:.1f}" x2="{x + 4:.1f}" y2="{y1:.1f}" stroke="{color}"/>'
                           f'<line x1="{x - 4:.1f}" y1="{y2:.1f}" x2="{x + 4:.1f}" y2="{y2:.1f}" stroke="{color}"/>')
            out.append(f'<circle cx="{x:.1f}" cy="{sy(100 * s["mean"]):.1f}" r="3.5" fill="{color}">'
                       f'<title>{html.escape(name)} {"test" if dx < 0 else "validation"}: {_pct(s)} %</title></circle>')
        label = html.escape(name) + (" ★" if name == agg["best_on_validation"] else "")
        out.append(f'<text x="{cx:.1f}" y="{top + ph + 14}" font-size="11" text-anchor="end" '
                   f'transform="rotate(-35 {cx:.1f} {top + ph + 14})">{label}</text>')
    out.append(f'<text x="{left}" y="{h - 4}" font-size="10">★ best mean validation accuracy</text></svg>')
    return "".join(out)


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child{text-align:left}code{font-size:90%}"""


def html_table(agg: dict) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in _headers(agg))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in _table_rows(agg))
    return f"<table><tr>{head}</tr>{body}</table>"


def html_page(agg: dict, records: list[dict], svg_text: str) -> str:
    best = agg["best_on_validation"]
    val = lambda r: "–" if r.get("val_accuracy") is None else f"{100 * r['val_accuracy']:.2f}"  # noqa: E731
    runs = "".join(
        f"<tr><td>{html.escape(r['strategy'])}</td><td>{r['seed']}</td><td>{100 * r['test_accuracy']:.2f}</td>"
        f"<td>{val(r)}</td>"
        f"<td>{100 * r['macro_f1']:.2f}</td><td>{r['seconds']}</td><td><code>{r['params_hash'][:12]}</code></td></tr>"
        for r in records)
    return ("<!doctype html><html><head><meta charset='utf-8'><title>augdag strategy comparison</title>"
            f"<style>{CSS}</style></head><body><h1>augdag strategy comparison</h1>"
            f"<p>{len(records)} runs. Best on validation: <b>{html.escape(str(best))}</b> "
            "(choose defaults by validation accuracy; test accuracy is reported, not used to choose). "
            "95% CI: Student t over seeds; paired differences use the seeds both strategies ran.</p>"
            f"{html_table(agg)}<div>{svg_text}</div><h2>Runs</h2><table><tr><th>strategy</th><th>seed</th>"
            "<th>test accuracy %</th><th>validation accuracy %</th><th>macro-F1 %</th><th>seconds</th>"
            f"<th>params hash</th></tr>{runs}</table></body></html>\n")


def write_outputs(out: str | Path, records: list[dict], baseline: str = "none") -> dict:
    """Write comparison.{json,csv,md,svg,html} into `out` (each atomically); return the aggregate."""
    out = Path(out)
    agg = aggregate(records, baseline)
    picture = svg(agg, records)
    write_text(out / "comparison.json", json.dumps(metrics_dict(agg), indent=2) + "\n")
    write_text(out / "comparison.csv", runs_csv(records))
    write_text(out / "comparison.md", markdown(agg))
    write_text(out / "comparison.svg", picture + "\n")
    write_text(out / "comparison.html", html_page(agg, records, picture))
    return agg
