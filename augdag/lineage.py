"""Per-sample lineage: find a sample in any stage manifest, walk its ancestry, replay it exactly."""

from __future__ import annotations

import json
from pathlib import Path

from augdag import mixing, ops
from augdag.errors import LineageError
from augdag.storage import MANIFEST, StageData, content_hash, read_table, to_frame
from augdag.tasks import out_dir

SEARCH_ORDER = ["ingest", "traditional", "mix", "generative"]


def find(root: Path, sample_id: str) -> tuple[str, dict]:
    """(stage, manifest row) of a sample; LineageError if no manifest holds it."""
    searched = []
    for stage in SEARCH_ORDER:
        path = out_dir(root, stage) / MANIFEST
        if not path.exists():
            continue
        searched.append(stage)
        hit = to_frame(read_table(path, filters=[("sample_id", "=", sample_id)]))
        if len(hit):
            return stage, _row(hit.iloc[0])
    if not searched:
        raise LineageError(f"no stage outputs under {out_dir(root, '')}: run the pipeline first (augdag run)")
    raise LineageError(f"sample {sample_id!r} not found in the manifests of: {', '.join(searched)}")


def _row(r) -> dict:
    d = {}
    for k, v in r.items():
        if hasattr(v, "tolist"):
            v = v.tolist()
        d[k] = None if v is None or (isinstance(v, float) and v != v) or str(v) == "<NA>" else v
    d["op_params"] = json.loads(d["op_params"]) if d.get("op_params") else {}
    return d


def chain(root: Path, sample_id: str) -> list[dict]:
    """The sample, then its parents, back to the raw rows (breadth first)."""
    out, frontier, seen = [], [sample_id], set()
    while frontier:
        sid = frontier.pop(0)
        if sid in seen:
            continue
        seen.add(sid)
        stage, r = find(root, sid)
        out.append({"stage": stage, **{k: r[k] for k in ("sample_id", "branch", "label", "soft_label", "parent_ids",
                                                          "source", "op_params", "seed", "content_hash", "gate")},
                    **({"text": r["text"]} if r.get("text") is not None else {})})
        frontier.extend(r["parent_ids"] or [])
    return out


def replay(root: Path, sample_id: str, params=None) -> dict:
    """Regenerate a sample from its parents and recorded params; compare content hashes.

    With `params`, also re-draws the op params from the recorded seed and reports whether the
    current params.yaml would draw the same ones.
    """
    stage, r = find(root, sample_id)
    result = {"sample_id": sample_id, "stage": stage, "recorded_hash": r["content_hash"]}
    from augdag.tasks import text

    if text.is_text_run(root):
        result.update(text.replay(root, stage, r, params))
    elif stage == "ingest":
        data = StageData(out_dir(root, "ingest"))
        result["replayed_hash"] = content_hash(data.image(r))
        result["note"] = "raw sample: hash of the stored image"
    elif stage == "traditional":
        (parent_id,) = r["parent_ids"]
        _, parent = find(root, parent_id)
        image = StageData(out_dir(root, "ingest")).image(parent)
        applied = r["op_params"]["ops"]
        result["replayed_hash"] = content_hash(ops.apply(image, applied))
        if params is not None:
            redrawn = ops.make_params(params.traditional.ops, int(r["seed"]), *image.shape[:2])
            result["params_redrawn_match"] = redrawn == applied
    elif stage == "mix":
        raw = StageData(out_dir(root, "ingest"))
        a, b = (raw.image(find(root, pid)[1]) for pid in r["parent_ids"])
        result["replayed_hash"] = content_hash(mixing.apply(a, b, r["op_params"]))
        if params is not None:
            from augdag.tasks.mix import TrainIndex, make_variant

            train = raw.manifest[raw.manifest.split == "train"].reset_index(drop=True)
            parent_id, k = sample_id.rsplit("~mix", 1)
            index = TrainIndex(params, train, len(r["soft_label"]))
            _, fields = make_variant(params, parent_id, int(k), index, raw.image)
            result["params_redrawn_match"] = json.loads(fields["op_params"]) == r["op_params"] and \
                fields["parent_ids"] == r["parent_ids"]
    elif stage == "generative":
        from augdag import generative

        if r["op_params"].get("backend") == "diffusers":
            from augdag.diffusion import load_diffusion

            q = r["op_params"]
            g = load_diffusion(q["model_path"], inference_steps=int(q["inference_steps"]))
            if g.digest != r["generator_hash"]:
                raise LineageError(f"{q['model_path']}: diffusion model hash differs from the one {sample_id} was drawn with")
            result["replayed_hash"] = content_hash(g.sample(int(r["label"]), int(q["latent_seed"])))
        else:
            ckpt = out_dir(root, "generative") / "generator.safetensors"
            if generative.file_hash(ckpt) != r["generator_hash"]:
                raise LineageError(f"{ckpt}: checkpoint hash differs from the one {sample_id} was drawn with")
            g = generative.load_generator(ckpt)
            result["replayed_hash"] = content_hash(g.sample(int(r["label"]), int(r["op_params"]["latent_seed"])))
    else:
        raise LineageError(f"replay of {stage} samples is not implemented")
    result["match"] = result["replayed_hash"] == result["recorded_hash"] == result.get("stored_hash", result["recorded_hash"])
    return result
