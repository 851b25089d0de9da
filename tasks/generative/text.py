"""The generative stage on texts (params `modality: text`, settings in `text.generative`)."""


from __future__ import annotations

import json
from pathlib import Path

import torch

from augdag import device
from augdag.errors import ParamsError
from augdag.log import Progress, logger
from augdag.params import Params
from augdag.seeding import derive_seed
from augdag.storage import text_hash, write_json
from augdag.tasks._text import _items, _raw, _write_branch


def make_translator(p: Params, dev="cpu"):
    from augdag.text import translate

    g = p.text.generative
    if g.translator == "apertium":
        return translate.ApertiumTranslator((f"eng-{g.pivot}", f"{g.pivot}-eng"))
    need = [f"eng-{g.pivot}", f"{g.pivot}-eng"]
    missing = [d for d in need if d not in g.marian]
    if missing:
        raise ParamsError(f"params.yaml: text.generative.marian lacks direction(s) {missing}; translator marian "
                          f"needs a local MarianMT folder for each of {need}")
    return translate.MarianTranslator({d: g.marian[d] for d in need}, device=str(dev))


def make_paraphraser(p: Params, dev="cpu"):
    from augdag.text import paraphrase

    pp = p.text.generative.paraphrase
    if pp.model_path is None:
        why = paraphrase.unavailable_reason()
        if why:
            raise ParamsError(f"params.yaml: text.generative.methods has paraphrase, but {why}; run "
                              "`make setup-paraphrase`, or set text.generative.paraphrase.model_path")
    return paraphrase.Paraphraser(temperature=pp.temperature, top_p=pp.top_p, max_new_tokens=pp.max_new_tokens,
                                  model_path=pp.model_path, device=str(dev))


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
    models = bool(para) or (bool(bt) and p.text.generative.translator == "marian")  # apertium is a CPU program
    dev = device.for_stage(p, "generative") if models else torch.device("cpu")
    if bt:
        translator = make_translator(p, dev)
        logger().info("generative (text): back-translation of %d texts through %s", len(bt), translator.identity)
        for (pid, k), rec in zip(bt, translate.back_translate([texts[pid] for pid, _ in bt], translator,
                                                             pivot=p.text.generative.pivot)):
            records[(pid, k)] = rec
        progress.update(len(bt))
    if para:
        para_model = make_paraphraser(p, dev)
        for pid, k in para:
            records[(pid, k)] = paraphrase.make_params(texts[pid], derive_seed(p.seed, "generative", pid, k),
                                                       para_model)
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
                                                        "methods": list(methods), **device.describe(dev)})
    from augdag.tasks.generative import metrics_path

    metrics_path(root).parent.mkdir(parents=True, exist_ok=True)
    write_json(metrics_path(root), summary)  # dvc.yaml's metrics file of the node (image: produced quality)
    return summary


def run(p: Params, root: Path, **_) -> dict:
    return generative(p, Path(root))


def replay(root: Path, r: dict, params: Params | None = None) -> dict:
    """The parent's text back-translated or paraphrased again with the recorded translator or model and seed."""
    from augdag.storage import try_read_json
    from augdag.tasks import out_dir
    from augdag.tasks._text import replay_start
    from augdag.text import paraphrase, translate

    texts, parents, out = replay_start(root, r)
    rec, p = r["op_params"], params or Params(modality="text")
    dev = device.for_replay((try_read_json(out_dir(root, "generative") / "summary.json") or {}).get("device"),
                            "generative")
    if rec.get("op") == translate.OP:
        text = translate.replay(texts[parents[0]], rec, make_translator(p, dev))
    else:
        text = paraphrase.replay(texts[parents[0]], rec, make_paraphraser(p, dev))
    return {**out, "replayed_hash": text_hash(text)}
