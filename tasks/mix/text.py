"""The mix stage on texts (params `modality: text`, settings in `text.mix`)."""


from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from augdag.layout import classes
from augdag.params import Params
from augdag.seeding import derive_seed
from augdag.storage import text_hash
from augdag.tasks._text import _items, _raw, _write_branch


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
    names = classes(root)
    if items:
        mixing.check_pairing(p.text.mix.pairing, labels, names)
    pools = mixing.PartnerPools(p.text.mix.pairing, labels)
    row_of = {sid: i for i, sid in enumerate(train.sample_id)}
    rows = [mix_pair(p, pid, k, train, row_of, pools, len(names)) for pid, k in items]
    return _write_branch(root, "mix", plan, rows)


def run(p: Params, root: Path, **_) -> dict:
    return mix(p, Path(root))


def replay(root: Path, r: dict, params: Params | None = None) -> dict:
    """An embedding-Mixup pair is its parents and lam; with `params`, whether the seed re-draws the same pair."""
    from augdag.tasks._text import replay_start

    _, parents, out = replay_start(root, r)
    rec = r["op_params"]
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
    return out
