"""The traditional stage on audio (params `modality: audio`, ops in `audio.traditional.ops`).

Each planned variant draws its ops from its seed (augdag/audio/ops.py): waveform ops on the parent's clip, then
SpecAugment on its log-Mel. The row's op_params is {"ops": record}; the output holds the spectrogram image and
the clip after the waveform ops (waves/), so the report can play it. Chunks of the plan go through the run's
mapper (workers or Dask), written in plan order: the bytes do not depend on the worker count.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from augdag.audio import ops
from augdag.audio.params import FeatureParams
from augdag.audio.store import AudioWriter, waves
from augdag.params import Params
from augdag.seeding import derive_seed
from augdag.storage import StageData, content_hash, try_read_json
from augdag.tasks import out_dir
from augdag.tasks._branch import run_branch


def _parents(root: Path, ids: list[str]) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """(clip, manifest row) of each raw sample id."""
    raw = StageData.shared(out_dir(root, "ingest"))
    found = raw.lookup(ids, ["sample_id", "shard", "index", "label", "source"])
    rows = [dict(zip(found, vals)) for vals in zip(*found.values())]
    clips = waves(out_dir(root, "ingest"), rows)
    return dict(zip(ids, clips)), dict(zip(ids, rows))


def chunk(args) -> list[tuple[np.ndarray, dict, np.ndarray]]:
    p, root, items = args
    cfg, feats = p.audio.traditional.ops, p.audio.features
    clips, rows = _parents(root, sorted({pid for pid, _ in items}))
    out = []
    for pid, k in items:
        s = derive_seed(p.seed, "traditional", pid, k)
        record = ops.make_params(cfg, s, feats)
        wave, image = ops.augment(clips[pid], record, feats)
        out.append((image, dict(sample_id=f"{pid}~trad{k}", split="train", branch="traditional",
                                label=int(rows[pid]["label"]), parent_ids=[pid], source=rows[pid]["source"],
                                op_params=json.dumps({"ops": record}), seed=s), wave))
    return out


def run(p: Params, root: Path, mapper=map, **_) -> dict:
    return run_branch(p, Path(root), "traditional", chunk, mapper, chunk_size=256, writer=AudioWriter)


def replay(root: Path, r: dict, params: Params | None = None) -> dict:
    """The parent's clip through the recorded ops; with `params`, whether the seed re-draws the same record."""
    pid = list(r["parent_ids"])[0]
    clips, _ = _parents(root, [pid])
    rec = r["op_params"] if isinstance(r["op_params"], dict) else json.loads(r["op_params"])  # lineage parses it
    rec = rec["ops"]
    feats = (params.audio.features if params is not None else _features(root))
    _, image = ops.augment(clips[pid], rec, feats)
    out = {"replayed_hash": content_hash(image)}
    if params is not None:
        out["params_redrawn_match"] = ops.make_params(params.audio.traditional.ops, int(r["seed"]), feats) == rec
    return out


def _features(root: Path) -> FeatureParams:
    """The feature settings the run's ingest computed its spectrograms with (its summary records them)."""
    summary = try_read_json(out_dir(root, "ingest") / "summary.json") or {}
    return FeatureParams(**summary["features"]) if "features" in summary else FeatureParams()
