"""Shared body of the augmentation branches: plan -> chunks -> any mapper -> one ordered output.

Chunks may run in any order on any number of workers; results are written in plan order, so the
bytes do not depend on the worker count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from augdag import numerics
from augdag.log import Progress, logger
from augdag.params import Params
from augdag.storage import StageWriter, atomic_dir, write_json
from augdag.tasks import out_dir
from augdag.tasks.strategy import load_plan


def run_branch(p: Params, root: Path, branch: str, chunk_fn: Callable, mapper: Callable = map,
               chunk_size: int = 512, check: Callable | None = None, writer: type[StageWriter] = StageWriter) -> dict:
    """`chunk_fn((p, root, [(parent_id, k), ...])) -> [(image, row fields), ...]`; with an audio writer
    (augdag.audio.store.AudioWriter), `[(spectrogram image, row fields, clip), ...]`."""
    plan = load_plan(root, branch)
    items = [(pid, k) for pid in plan["parents"] for k in range(plan["multiplier"])] if plan["enabled"] else []
    if items and check is not None:
        check(p, root)
    chunks = [(p, root, items[i:i + chunk_size]) for i in range(0, len(items), chunk_size)]
    logger().info("%s: %d samples in %d chunks", branch, len(items), len(chunks))
    progress = Progress(branch, len(items))
    with atomic_dir(out_dir(root, branch)) as tmp:
        w = writer(tmp, p.ingest.shard_size)
        for result in mapper(chunk_fn, chunks):
            for img, fields, *clip in result:
                w.add_clip(img, clip[0], **fields) if clip else w.add(img, **fields)
            progress.update(len(result))
        w.close(frame=False)
        summary = {"enabled": plan["enabled"], "samples": w.count, "numerics": numerics.state()}
        write_json(tmp / "summary.json", summary)
    return summary
