"""The quality stage on texts (params `modality: text`, settings in `text.quality`)."""


from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from augdag import checks, device, scoring
from augdag.layout import classes
from augdag.log import Progress, logger
from augdag.params import TEXT_BRANCHES as BRANCHES
from augdag.params import Params
from augdag.storage import read_manifest
from augdag.tasks import out_dir
from augdag.tasks._text import _raw

SCORES = ("semantic_similarity", "label_prob", "length_ratio", "english_share", "outlier_z")


def score_branch(p: Params, branch: str, m: pd.DataFrame, texts: dict[str, str], ref, n_classes: int) -> pd.DataFrame:
    """The branch manifest with the text gate's score columns and the columns its checks read."""
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
    out["soft_label_sum"] = scoring.soft_label_sum(m.soft_label)
    known = set(texts)
    out["parents_in_raw"] = [all(pid in known for pid in ps) for ps in m.parent_ids]
    return out


def _checks(p: Params, branch: str, label_set: list[int]) -> tuple[dict, dict]:
    from augdag.text import gate

    q = p.text.quality
    th = getattr(q.thresholds, branch)
    sigma = p.quality.outlier.sigma if q.outlier_score.get(branch) is not None else None
    params = gate.suite_parameters(label_set, q.text_length, q.english_share_min, th.semantic_similarity,
                                   th.label_prob, sigma)  # a null threshold turns its check off
    return params, checks.TEXT_BRANCH.modes_for(p.quality.modes)


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
    from augdag.text import encoder

    log = logger()
    checks.check_modes(p.quality.modes)
    dev = device.for_stage(p, "quality")
    with encoder.on_device(dev):
        return _quality(p, root, log, device.describe(dev))


def _quality(p: Params, root: Path, log, dev: dict) -> dict:
    from augdag.tasks.quality import gate_branch, write_gate
    from augdag.text import gate

    names = classes(root)
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
        k, r, summary[branch] = gate_branch(branch, frame, checks.TEXT_BRANCH, params, modes, results, SCORES,
                                            _scores_json)
        parts.append((k, r))
        progress.update(len(m))
    return write_gate(root, parts, summary, results, dev)


def run(p: Params, root: Path, **_) -> dict:
    return quality(p, Path(root))
