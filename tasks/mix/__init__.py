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


PLACE = ("sample_id", "shard", "index", "height", "width", "channels")  # the columns that locate an image


class TrainIndex:
    """The train split once per chunk, as column arrays: row of each id and the partner pools (no per-sample
    scans, no pandas row per parent)."""

    def __init__(self, p: Params, train, n_classes: int):
        self.n_classes = n_classes
        self.labels = train.label.to_numpy(dtype=np.int64)
        self.cols = {c: train[c].to_numpy() for c in (*PLACE, "source")}
        self.row = {sid: i for i, sid in enumerate(self.cols["sample_id"])}
        self.pools = mixing.PartnerPools(p.mix.pairing, self.labels)

    def place(self, rows) -> dict:
        """The locating columns of train rows `rows` (StageData.images_of's input)."""
        return {c: self.cols[c][rows] for c in PLACE}


def draw_variant(p: Params, parent_id: str, k: int, index: TrainIndex) -> tuple[int, int, dict, int]:
    """(row of the parent, row of its partner, mix params, sample seed) of variant k of one parent."""
    i = index.row[parent_id]
    sample_seed = derive_seed(p.seed, BRANCH, parent_id, k)
    g = np.random.Generator(np.random.PCG64(sample_seed))
    partner = index.pools.pick(i, g)
    h, w = int(index.cols["height"][i]), int(index.cols["width"][i])
    return i, partner, mixing.draw(p.mix, g, h, w), sample_seed


def fields_of(parent_id: str, k: int, i: int, partner: int, params: dict, seed: int, index: TrainIndex) -> dict:
    la, lb = int(index.labels[i]), int(index.labels[partner])
    return dict(
        sample_id=f"{parent_id}~mix{k}", split="train", branch=BRANCH, label=la if params["lam"] >= 0.5 else lb,
        soft_label=mixing.soft_label(la, lb, params["lam"], index.n_classes),
        parent_ids=[parent_id, str(index.cols["sample_id"][partner])],
        source=index.cols["source"][i], op_params=json.dumps(params), seed=seed)


def make_variant(p: Params, parent_id: str, k: int, index: TrainIndex, raw: StageData) -> tuple:
    """(image, fields) of variant k of one parent: the replayable unit."""
    i, partner, params, seed = draw_variant(p, parent_id, k, index)
    a, b = raw.images_of(index.place([i, partner]))
    return mixing.apply(a, b, params), fields_of(parent_id, k, i, partner, params, seed, index)


def _chunk(args):
    """A chunk's variants, as make_variant makes them, with every parent and partner read in one indexed copy
    per shard."""
    p, root, items = args
    raw, train = _train(root)
    index = TrainIndex(p, train, len(classes(root)))
    drawn = [draw_variant(p, parent_id, k, index) for parent_id, k in items]
    rows = np.unique(np.array([r for d in drawn for r in d[:2]], dtype=np.int64))
    pos = {r: j for j, r in enumerate(rows.tolist())}
    images = raw.images_of(index.place(rows))
    return [(mixing.apply(images[pos[i]], images[pos[partner]], params),
             fields_of(parent_id, k, i, partner, params, seed, index))
            for (parent_id, k), (i, partner, params, seed) in zip(items, drawn)]


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
        _, fields = make_variant(params, parent_id, int(k), index, raw)
        out["params_redrawn_match"] = json.loads(fields["op_params"]) == r["op_params"] and \
            fields["parent_ids"] == r["parent_ids"]
    return out
