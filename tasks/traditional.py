"""Traditional branch: flips, rotation, crops, affine, colour jitter, blur, noise, erasing.

Each variant's op params are drawn from seed(global seed, 'traditional', parent id, k) and recorded,
so the variant can be replayed exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from augdag import ops
from augdag.params import Params
from augdag.seeding import derive_seed
from augdag.storage import StageData
from augdag.tasks import out_dir
from augdag.tasks._branch import run_branch

BRANCH = "traditional"


def variant_id(parent_id: str, k: int) -> str:
    return f"{parent_id}~trad{k}"


def make_variant(p: Params, parent_id: str, k: int, image):
    """(image, sample_seed, applied op params) of variant k of one parent: the replayable unit."""
    sample_seed = derive_seed(p.seed, BRANCH, parent_id, k)
    h, w = image.shape[:2]
    applied = ops.make_params(p.traditional.ops, sample_seed, h, w)
    return ops.apply(image, applied), sample_seed, applied


def _chunk(args):
    p, root, items = args
    raw = StageData(out_dir(root, "ingest"))
    by_id = raw.manifest.set_index("sample_id")
    out = []
    for parent_id, k in items:
        r = by_id.loc[parent_id]
        img, sample_seed, applied = make_variant(p, parent_id, k, raw.image(r))
        out.append((img, dict(sample_id=variant_id(parent_id, k), split="train", branch=BRANCH, label=int(r.label),
                              parent_ids=[parent_id], source=r.source, op_params=json.dumps({"ops": applied}),
                              seed=sample_seed)))
    return out


def run(p: Params, root: Path, mapper: Callable = map, chunk_size: int = 512, **_) -> dict:
    return run_branch(p, root, BRANCH, _chunk, mapper, chunk_size)
