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
from augdag.params import Params
from augdag.seeding import derive_seed
from augdag.storage import StageData
from augdag.tasks import out_dir
from augdag.tasks._branch import run_branch
from augdag.tasks.ingest import classes

BRANCH = "mix"


def _train(root: Path):
    raw = StageData(out_dir(root, "ingest"))
    train = raw.manifest[raw.manifest.split == "train"].reset_index(drop=True)
    return raw, train


def make_variant(p: Params, parent_id: str, k: int, train, labels: np.ndarray, n_classes: int, image_of) -> tuple:
    """(image, fields) of variant k of one parent: the replayable unit."""
    index = int(np.flatnonzero(train.sample_id.to_numpy() == parent_id)[0])
    sample_seed = derive_seed(p.seed, BRANCH, parent_id, k)
    g = np.random.Generator(np.random.PCG64(sample_seed))
    partner = mixing.pick_partner(p.mix.pairing, index, labels, g)
    a, b = image_of(train.iloc[index]), image_of(train.iloc[partner])
    params = mixing.draw(p.mix, g, *a.shape[:2])
    la, lb = int(labels[index]), int(labels[partner])
    return mixing.apply(a, b, params), dict(
        sample_id=f"{parent_id}~mix{k}", split="train", branch=BRANCH, label=la if params["lam"] >= 0.5 else lb,
        soft_label=mixing.soft_label(la, lb, params["lam"], n_classes), parent_ids=[parent_id, train.sample_id.iloc[partner]],
        source=train.source.iloc[index], op_params=json.dumps(params), seed=sample_seed)


def _chunk(args):
    p, root, items = args
    raw, train = _train(root)
    labels = train.label.to_numpy(dtype=np.int64)
    n_classes = len(classes(root))
    return [make_variant(p, parent_id, k, train, labels, n_classes, raw.image) for parent_id, k in items]


def _check(p: Params, root: Path) -> None:
    _, train = _train(root)
    mixing.check_pairing(p.mix.pairing, train.label.to_numpy(dtype=np.int64), classes(root))


def run(p: Params, root: Path, mapper: Callable = map, chunk_size: int = 512, **_) -> dict:
    return run_branch(p, root, BRANCH, _chunk, mapper, chunk_size, check=_check)
