"""Traditional branch: flips, rotation, crops, affine, colour jitter, blur, noise, erasing.

Each variant's op params are drawn from seed(global seed, 'traditional', parent id, k) and recorded,
so the variant can be replayed exactly. Work is split in chunks that any mapper (a thread pool, a
Prefect task runner) may run in any order; results are written in plan order, so the bytes do not
depend on the number of workers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from augdag import ops
from augdag.log import Progress, logger
from augdag.params import Params
from augdag.seeding import derive_seed
from augdag.storage import StageData, StageWriter, atomic_dir, write_json
from augdag.tasks import out_dir
from augdag.tasks.strategy import load_plan

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
    plan = load_plan(root, BRANCH)
    items = [(pid, k) for pid in plan["parents"] for k in range(plan["multiplier"])] if plan["enabled"] else []
    chunks = [(p, root, items[i:i + chunk_size]) for i in range(0, len(items), chunk_size)]
    logger().info("traditional: %d variants in %d chunks", len(items), len(chunks))
    progress = Progress(BRANCH, len(items))
    with atomic_dir(out_dir(root, BRANCH)) as tmp:
        w = StageWriter(tmp, p.ingest.shard_size)
        for result in mapper(_chunk, chunks):
            for img, fields in result:
                w.add(img, **fields)
            progress.update(len(result))
        manifest = w.close()
        summary = {"enabled": plan["enabled"], "samples": len(manifest)}
        write_json(tmp / "summary.json", summary)
    return summary
