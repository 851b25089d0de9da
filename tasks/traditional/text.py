"""The traditional stage on texts (params `modality: text`, settings in `text.traditional`)."""


from __future__ import annotations

import json
from pathlib import Path

from augdag.log import Progress
from augdag.params import Params
from augdag.seeding import derive_seed
from augdag.storage import text_hash
from augdag.tasks._text import _items, _raw, _write_branch


def traditional_variant(p: Params, text: str, sample_seed: int, tfidf=None, nlp=None) -> tuple[str, dict]:
    """(variant text, op_params) of one text: the word ops, then maybe a syntax rewrite. The replayable unit."""
    from augdag.seeding import rng
    from augdag.text import ops, syntax

    cfg = p.text.traditional
    linker = None
    if cfg.ops.entity.p > 0:
        from augdag.text import kg

        linker = kg.linker_for(p)
    record = ops.make_params(cfg.ops, text, sample_seed, tfidf, linker=linker)
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


def run(p: Params, root: Path, **_) -> dict:
    return traditional(p, Path(root))


def replay(root: Path, r: dict, params: Params | None = None) -> dict:
    """The parent's text through the recorded ops; with `params`, whether the seed re-draws the same record."""
    from augdag.tasks._text import replay_start

    texts, parents, out = replay_start(root, r)
    source, rec = texts[parents[0]], r["op_params"]
    out["replayed_hash"] = text_hash(replay_traditional(source, rec))
    if params is not None:
        from augdag.text import ops

        raw = _raw(root)
        tfidf = ops.TfidfModel.fit(raw[raw.split == "train"].text) \
            if params.text.traditional.ops.tfidf_replace.p > 0 else None
        _, redrawn = traditional_variant(params, source, int(r["seed"]), tfidf)
        out["params_redrawn_match"] = redrawn == rec
    return out
