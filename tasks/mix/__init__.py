"""Mix branch: offline Mixup / CutMix samples with two parents and a soft label.

Variant k of parent a: seed(global seed, 'mix', a, k) picks the partner b (per `mix.pairing`),
the op, λ and the CutMix box; all are recorded, so the sample replays exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from augdag import mixing
from augdag.layout import classes
from augdag.params import Params
from augdag.seeding import derive_seed
from augdag.storage import StageData
from augdag.tasks import out_dir
from augdag.tasks._branch import run_branch

BRANCH = "mix"


def _train(root: Path):
    raw = StageData.shared(out_dir(root, "ingest"))
    train = raw.manifest[raw.manifest.split == "train"].reset_index(drop=True)
    return raw, train


class TrainIndex:
    """The train split once per chunk: row of each id and the partner pools (no per-sample scans)."""

    def __init__(self, p: Params, train, n_classes: int):
        self.train, self.n_classes = train, n_classes
        self.labels = train.label.to_numpy(dtype=np.int64)
        self.row = {sid: i for i, sid in enumerate(train.sample_id)}
        self.pools = mixing.PartnerPools(p.mix.pairing, self.labels)


def make_variant(p: Params, parent_id: str, k: int, index: TrainIndex, image_of) -> tuple:
    """(image, fields) of variant k of one parent: the replayable unit."""
    train, labels = index.train, index.labels
    i = index.row[parent_id]
    sample_seed = derive_seed(p.seed, BRANCH, parent_id, k)
    g = np.random.Generator(np.random.PCG64(sample_seed))
    partner = index.pools.pick(i, g)
    a, b = image_of(train.iloc[i]), image_of(train.iloc[partner])
    params = mixing.draw(p.mix, g, *a.shape[:2])
    la, lb = int(labels[i]), int(labels[partner])
    return mixing.apply(a, b, params), dict(
        sample_id=f"{parent_id}~mix{k}", split="train", branch=BRANCH, label=la if params["lam"] >= 0.5 else lb,
        soft_label=mixing.soft_label(la, lb, params["lam"], index.n_classes),
        parent_ids=[parent_id, train.sample_id.iloc[partner]],
        source=train.source.iloc[i], op_params=json.dumps(params), seed=sample_seed)


def _chunk(args):
    p, root, items = args
    raw, train = _train(root)
    index = TrainIndex(p, train, len(classes(root)))
    return [make_variant(p, parent_id, k, index, raw.image) for parent_id, k in items]


def _check(p: Params, root: Path) -> None:
    _, train = _train(root)
    mixing.check_pairing(p.mix.pairing, train.label.to_numpy(dtype=np.int64), classes(root))


def run(p: Params, root: Path, mapper: Callable = map, chunk_size: int = 512, **_) -> dict:
    return run_branch(p, root, BRANCH, _chunk, mapper, chunk_size, check=_check)


def replay(root: Path, r: dict, params: Params | None = None) -> dict:
    """The two parents mixed with the recorded params; with `params`, whether they re-draw the same pair and
    params."""
    from augdag.storage import content_hash
    from augdag.tasks import find

    raw = StageData(out_dir(root, "ingest"))
    a, b = (raw.image(find(root, pid)[1]) for pid in r["parent_ids"])
    out = {"replayed_hash": content_hash(mixing.apply(a, b, r["op_params"]))}
    if params is not None:
        train = raw.manifest[raw.manifest.split == "train"].reset_index(drop=True)
        parent_id, k = r["sample_id"].rsplit("~mix", 1)
        index = TrainIndex(params, train, len(r["soft_label"]))
        _, fields = make_variant(params, parent_id, int(k), index, raw.image)
        out["params_redrawn_match"] = json.loads(fields["op_params"]) == r["op_params"] and \
            fields["parent_ids"] == r["parent_ids"]
    return out
