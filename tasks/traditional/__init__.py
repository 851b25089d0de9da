"""Traditional branch: flips, rotation, crops, affine, colour jitter, blur, noise, erasing.

Each variant's op params are drawn from seed(global seed, 'traditional', parent id, k) and recorded,
so the variant can be replayed exactly. The geometric ops a variant drew are applied as one warp
(augdag.ops: `"geometry": "composed"` in its op_params).
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
    return ops.apply(image, applied, composed=True), sample_seed, applied


def _chunk(args):
    """The variants of one chunk: params drawn per sample (as make_variant), applied in batches of one image shape."""
    p, root, items = args
    raw = StageData.shared(out_dir(root, "ingest"))
    cols = ["sample_id", "label", "source", "shard", "index", "height", "width", "channels"]
    rows = raw.lookup([pid for pid, _ in items], cols)
    images = raw.images_of(rows)
    seeds = [derive_seed(p.seed, BRANCH, pid, k) for pid, k in items]
    applied: list = [None] * len(items)
    by_shape: dict[tuple, list[int]] = {}
    for i, img in enumerate(images):
        by_shape.setdefault(img.shape, []).append(i)
    for shape, idx in by_shape.items():
        for i, a in zip(idx, ops.make_params_batch(p.traditional.ops, [seeds[i] for i in idx], *shape[:2])):
            applied[i] = a
    out_images: list = [None] * len(items)
    for idx in by_shape.values():
        for i, img in zip(idx, ops.apply_batch([images[i] for i in idx], [applied[i] for i in idx], composed=True)):
            out_images[i] = img
    return [(img, dict(sample_id=variant_id(pid, k), split="train", branch=BRANCH, label=int(label),
                       parent_ids=[pid], source=source,
                       op_params=json.dumps({"ops": a, "geometry": ops.COMPOSED}), seed=s))
            for img, (pid, k), label, source, a, s in zip(out_images, items, rows["label"], rows["source"], applied,
                                                         seeds)]


def run(p: Params, root: Path, mapper: Callable = map, chunk_size: int = 512, **_) -> dict:
    return run_branch(p, root, BRANCH, _chunk, mapper, chunk_size)


def replay(root: Path, r: dict, params: Params | None = None) -> dict:
    """The parent's image through the recorded ops; with `params`, whether they re-draw the same ops."""
    from augdag.storage import content_hash
    from augdag.tasks import find

    (parent_id,) = r["parent_ids"]
    _, parent = find(root, parent_id)
    image = StageData(out_dir(root, "ingest")).image(parent)
    applied = r["op_params"]["ops"]
    composed = r["op_params"].get("geometry") == ops.COMPOSED  # records from before 2026-12-07: one warp per op
    out = {"replayed_hash": content_hash(ops.apply(image, applied, composed=composed))}
    if params is not None:
        redrawn = ops.make_params(params.traditional.ops, int(r["seed"]), *image.shape[:2])
        out["params_redrawn_match"] = redrawn == applied
    return out
