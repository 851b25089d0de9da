"""Quality gate: scores every augmented sample, then keeps, warns about or rejects it.

Per branch: strategy-aware PSNR/SSIM against the source (tasks/quality/scores.py), the reference
classifier's probability of the label, and the sliding-window outlier z; then the branch's gate
(augdag.checks.BRANCH): Great Expectations validates expectations/branch.json (schema, score ranges,
parents) on the branch, and the per-sample checks (psnr, ssim, in_frame, label_consistency, outlier)
are vectorised masks over the score columns. Every check has a mode (filter, warn, fail, off; the
defaults, overridden by params quality.modes; a null threshold turns its check off). Kept rows go to
manifest.parquet, filtered ones to rejected.parquet with the names of the checks they failed; both
carry their scores. Rows point at their branch's shards; no image is copied. Validation results (JSON)
and GE Data Docs go to data/validation/quality/.

Memory: a branch goes through scoring and its suite in chunks of quality.chunk_rows rows (one
validation result per chunk: <branch>.json, <branch>.part001.json, ...), kept and rejected rows are
appended chunk by chunk, and the reference classifier learns from at most
quality.reference_max_per_class raw images per class. What stays O(samples) is the branch manifest
as Arrow (about 0.4 KB a row) and a chunk's rows; the gate's checks are row-wise, so the chunking
changes neither which rows are kept nor the summary's counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from augdag import checks, device, gx, imquality, ops, scoring
from augdag.errors import ParamsError
from augdag.layout import classes, cycle_dir
from augdag.log import Progress, logger
from augdag.params import BRANCHES, Params
from augdag.seeding import derive_seed
from augdag.storage import (
    MANIFEST,
    ManifestWriter,
    StageData,
    atomic_dir,
    manifest_rows,
    read_table,
    table_chunks,
    write_json,
)
from augdag.tasks import out_dir
from augdag.tasks.finetune import targets
from augdag.tasks.quality import scores as image_scores

SCORES = ("psnr", "ssim", "in_frame", "label_prob", "outlier_z")
AUDIO_SCORES = SCORES + ("snr",)  # audio: the clip's SNR against its source (traditional; tasks/quality/audio.py)
# The scores whose mean and low quantile go into the gate's DVC metrics (images, texts and audio).
SUMMARISED = frozenset({"psnr", "ssim", "label_prob", "semantic_similarity", "snr"})
# the scoring batch: the reference classifier embeds rows [k * CHUNK, (k + 1) * CHUNK) of a branch together
CHUNK = 1024
# rows of a scoring job (a shard task on Dask): whole CHUNKs, so the batches are the same however jobs are cut
JOB_ROWS = 4 * CHUNK
# the branches whose samples have raw parents (scored against them; a row with an unknown parent is not scored)
SOURCED = ("traditional", "mix", "crossdomain")
# the manifest columns a scoring job reads
JOB_COLUMNS = ["sample_id", "shard", "index", "height", "width", "channels", "label", "soft_label", "parent_ids",
               "op_params"]


def score_job(args) -> dict[str, np.ndarray]:
    """The scores of one job's rows: (branch, root, rows, reference classifier, torch threads) -> psnr, ssim,
    in_frame, label_prob arrays. A pure function of its arguments (a shard task on Dask; reads the shards from
    `root`). The thread count is the stage's: a batch's float results may depend on it, and Dask's workers
    start with one."""
    import torch

    branch, root, rows, ref, threads, *audio = args  # audio: [its FeatureParams] on an audio run
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    data = StageData(out_dir(root, branch), manifest=False)
    raw = StageData.shared(out_dir(root, "ingest"))
    cycle = StageData(cycle_dir(root), manifest=False) if branch == "crossdomain" else None  # once: its maps stay
    names = ("psnr", "ssim", "in_frame", "label_prob") + (("snr",) if audio else ())
    cols = {k: np.full(len(rows), np.nan) for k in names}
    for start in range(0, len(rows), CHUNK):
        part = rows.iloc[start:start + CHUNK]
        sl = slice(start, start + len(part))
        images = data.images(part)
        cols["label_prob"][sl] = scoring.label_prob(ref.proba(images), targets(part, ref.n_classes).numpy())
        if branch == "traditional" and audio:
            from augdag.tasks.quality.audio import traditional_scores

            for k, v in traditional_scores(root, part, np.stack(_parent_images(raw, part, 0)), images).items():
                cols[k][sl] = v
        elif branch == "traditional":
            sources = np.stack(_parent_images(raw, part, 0))
            records = [json.loads(q or "{}") for q in part.op_params]
            sc = image_scores.traditional_scores(sources, images, [r.get("ops", []) for r in records],
                                                 [r.get("geometry") == ops.COMPOSED for r in records])
            for k in ("psnr", "ssim", "in_frame"):
                cols[k][sl] = sc[k]
        elif branch == "mix":
            a, b = (np.stack(_parent_images(raw, part, j)) for j in (0, 1))
            lam = np.array([json.loads(q)["lam"] for q in part.op_params])
            sc = image_scores.mix_scores(a, b, images, lam)
            cols["psnr"][sl], cols["ssim"][sl] = sc["psnr"], sc["ssim"]
        elif branch == "crossdomain":  # the source against its cycle reconstruction, stored at the sample's place
            sources = np.stack(_parent_images(raw, part, 0))
            recs = cycle.images(part)
            cols["psnr"][sl] = imquality.psnr_batch(recs, sources)
            cols["ssim"][sl] = imquality.ssim_batch(recs, sources)
    return cols


def _parent_images(raw: StageData, rows: pd.DataFrame, j: int) -> list[np.ndarray]:
    """The raw images of each row's j-th parent (one indexed read per shard)."""
    where = raw.lookup([ps[j] for ps in rows.parent_ids], ["sample_id", "shard", "index", "height", "width",
                                                          "channels"])
    return raw.images_of(where)


def score_branch(branch: str, m: pd.DataFrame, root: Path, ref: image_scores.ReferenceClassifier,
                 raw_ids: pd.Index, mapper=map, progress: Progress | None = None, audio=None) -> pd.DataFrame:
    """The branch manifest (or a chunk of it) with the score columns and the derived columns the gate checks.

    The scores come from jobs of JOB_ROWS rows through `mapper` (in order); raw_ids: the raw train sample ids.
    Rows whose parents are not raw train samples (a broken manifest) score NaN and fail parents_in_raw."""
    flat = [pid for ps in m.parent_ids for pid in (ps if ps is not None else [])]
    known = raw_ids.get_indexer(flat) >= 0
    counts = [len(ps) if ps is not None else 0 for ps in m.parent_ids]
    ends = np.cumsum(counts)
    parents_ok = np.array([bool(known[e - c:e].all()) for c, e in zip(counts, ends)], dtype=bool)
    cols = {k: np.full(len(m), np.nan) for k in (AUDIO_SCORES if audio else SCORES)}
    scorable = m[parents_ok] if branch in SOURCED else m
    import torch

    threads = torch.get_num_threads()
    jobs = [(branch, root, scorable.iloc[s:s + JOB_ROWS][JOB_COLUMNS], ref, threads, *([audio] if audio else []))
            for s in range(0, len(scorable), JOB_ROWS)]
    where = np.flatnonzero(parents_ok) if branch in SOURCED else np.arange(len(m))
    start = 0
    for res in mapper(score_job, jobs):
        n = len(res["label_prob"])
        for k, v in res.items():
            cols[k][where[start:start + n]] = v
        start += n
        if progress:
            progress.update(n)
    out = m.copy()
    for k in cols:
        if k != "outlier_z":
            out[k] = cols[k]
    out["soft_label_sum"] = scoring.soft_label_sum(m.soft_label)
    out["parents_in_raw"] = parents_ok
    return out


def reference_rows(train: pd.DataFrame, per_class: int | None, seed: int) -> pd.DataFrame:
    """The raw train rows the reference classifier learns from: all of a class with at most `per_class` rows,
    else the `per_class` rows of lowest derive_seed(seed, "quality-reference", sample_id), in manifest order.

    The features of 60,000 images are 0.6 GB in float64 and the probe's L-BFGS holds two more copies; a linear
    probe does not need them all, and the choice depends on the ids only (not on order or worker count).
    """
    if per_class is None or not len(train) or train.label.value_counts().max() <= per_class:
        return train
    key = np.array([derive_seed(seed, "quality-reference", s) for s in train.sample_id], dtype=np.uint64)
    labels = train.label.to_numpy()
    order = np.lexsort((key, labels))  # by class, then by key
    starts = np.searchsorted(labels[order], labels[order], side="left")
    keep = np.zeros(len(train), bool)
    keep[order[np.arange(len(order)) - starts < per_class]] = True
    return train[keep]


def _checks(p: Params, branch: str, n_classes: int, gate: checks.Gate = checks.BRANCH) -> tuple[dict, dict]:
    """(the gate's parameters, modes) for one branch: a null threshold, or no watched outlier score, turns its
    check off."""
    th = getattr(p.quality.thresholds, branch)
    watched = p.quality.outlier.score.get(branch) is not None
    params = {"label_set": list(range(n_classes)), "psnr_min": th.psnr, "ssim_min": th.ssim,
              "in_frame_min": th.in_frame, "label_prob_min": th.label_prob,
              "sigma": p.quality.outlier.sigma if watched else None}
    if gate is checks.AUDIO_BRANCH:  # a time shift moves every frame: on clips the traditional branch's check is SNR
        params["snr_min"] = p.audio.quality.snr_min
        if branch == "traditional":
            params["psnr_min"] = params["ssim_min"] = None
    return params, gate.modes_for(p.quality.modes)


def _scores_json(frame: pd.DataFrame, scores: tuple[str, ...] = SCORES) -> list[str]:
    """Per row, the JSON of its non-missing scores (rounded to 6 digits), column-wise."""
    cols = {k: frame[k].to_numpy(np.float64) for k in scores}
    return [json.dumps({k: round(float(cols[k][i]), 6) for k in scores if not np.isnan(cols[k][i])}, sort_keys=True)
            for i in range(len(frame))]


def run(p: Params, root: Path, mapper=map, audio=None, **_) -> dict:
    """Each branch's manifest goes through scoring and its suite in chunks of quality.chunk_rows rows (Arrow
    holds the manifest, checked on read, sample ids unique; pandas, the scores and Great Expectations see one
    chunk at a time); kept and rejected rows are appended to their Parquet files chunk by chunk. `audio`: the
    FeatureParams of an audio run (tasks/quality/audio.py): its traditional branch is scored on the clips too."""
    log = logger()
    checks.check_modes(p.quality.modes)
    if p.quality.chunk_rows % CHUNK:  # the embedder's batches must not depend on the chunking (float results do)
        raise ParamsError(f"params.yaml: quality.chunk_rows = {p.quality.chunk_rows}: must be a multiple of {CHUNK}")
    names = classes(root)
    dev = device.for_stage(p, "quality")
    raw = StageData(out_dir(root, "ingest"))
    results = out_dir(root, "validation") / "quality"
    results.mkdir(parents=True, exist_ok=True)
    sizes = {b: manifest_rows(out_dir(root, b)) for b in BRANCHES}
    ref = None
    raw_train = raw.manifest[raw.manifest.split == "train"]
    if sum(sizes.values()):
        train = reference_rows(raw_train, p.quality.reference_max_per_class, p.seed)
        log.info("quality: reference classifier on %d raw train images", len(train))
        ref = image_scores.ReferenceClassifier(raw.images(train), train.label.to_numpy(dtype=np.int64), len(names),
                                               image_size=p.quality.reference_image_size,
                                               depth=p.quality.reference_depth, device=dev)
    raw_ids = pd.Index(raw_train.sample_id)
    # scoring jobs go to the run's Dask workers where there are some; in this process they run one after another
    # (torch already spreads a job over the cores)
    jobs_map = mapper if getattr(mapper, "distributed", False) else map
    progress = Progress("quality", sum(sizes.values()))
    summary: dict = {}

    def parts():
        for branch in BRANCHES:
            if not sizes[branch]:
                summary[branch] = {"in": 0, "kept": 0, "rejected": 0, "pass_rate": None, "checks": {}}
                continue
            table = read_table(out_dir(root, branch) / MANIFEST)
            watch = p.quality.outlier.score.get(branch)
            window = scoring.WindowZ(p.quality.outlier.window_size)
            gate, scores = (checks.AUDIO_BRANCH, AUDIO_SCORES) if audio else (checks.BRANCH, SCORES)
            params, modes = _checks(p, branch, len(names), gate)
            tally = BranchTally(scores, sizes[branch])
            for m in table_chunks(table, p.quality.chunk_rows):
                frame = score_branch(branch, m, root, ref, raw_ids, jobs_map, progress, audio)
                frame["outlier_z"] = window(frame[watch].to_numpy(np.float64)) if watch else np.nan
                k, r = gate_chunk(branch, frame, gate, params, modes, results, tally,
                                  lambda f, scores=scores: _scores_json(f, scores))
                yield k, r
            summary[branch] = tally.summary()

    return write_gate(root, parts(), summary, results, device.describe(dev))


def _result_path(results: Path, branch: str, chunk: int) -> Path:
    """The validation result of a branch's chunk: <branch>.json for the first, <branch>.part001.json, ... after."""
    return results / (f"{branch}.json" if chunk == 0 else f"{branch}.part{chunk:03d}.json")


class BranchTally:
    """A branch's gate summary summed over its chunks (counts, check outcomes, score means)."""

    def __init__(self, scores: tuple[str, ...], total: int = 0):
        self.scores, self.total = scores, total  # total: the branch's rows, when it comes in chunks
        self.chunks = self.n = self.kept = self.rejected = 0
        self.rejected_by: dict[str, int] = {}
        self.checks: dict[str, dict] = {}
        self.sums = {s: 0.0 for s in scores}
        self.counts = {s: 0 for s in scores}
        self.values: dict[str, list[np.ndarray]] = {s: [] for s in scores if s in SUMMARISED}

    def add(self, frame: pd.DataFrame, k: pd.DataFrame, r: pd.DataFrame, result) -> None:
        self.chunks += 1
        self.n, self.kept, self.rejected = self.n + len(frame), self.kept + len(k), self.rejected + len(r)
        for name, c in result.checks.items():
            if c["mode"] == "filter":
                self.rejected_by[name] = self.rejected_by.get(name, 0) + sum(
                    name in reason.split("; ") for reason in r.gate_reason)
            old = self.checks.get(name)
            if old is None:
                self.checks[name] = dict(c)
                continue
            if c["success"] is not None:
                old["success"] = c["success"] if old["success"] is None else bool(old["success"] and c["success"])
            for key in ("unexpected_count", "element_count"):
                if c[key] is not None:
                    old[key] = c[key] + (old[key] or 0)
        for s in self.scores:
            col = frame[s]
            self.sums[s] += float(col.sum())
            self.counts[s] += int(col.count())
            if s in self.values:
                self.values[s].append(col.dropna().to_numpy(np.float64))

    def summary(self) -> dict:
        return {
            "in": self.n, "kept": self.kept, "rejected": self.rejected, "pass_rate": round(self.kept / self.n, 6),
            "rejected_by": self.rejected_by, "checks": self.checks,
            "mean_scores": {s: round(self.sums[s] / self.counts[s], 4) for s in self.scores if self.counts[s]},
            "score_summary": self.score_summary(),
        }

    def score_summary(self) -> dict:
        """Mean and 10th percentile of each summarised score over the branch's rows (kept and rejected), so
        `dvc metrics diff` shows quality moving between experiments, not only pass rates."""
        out = {}
        for s, parts in self.values.items():
            v = np.concatenate(parts) if parts else np.zeros(0)
            if len(v):
                out[s] = {"mean": round(float(v.mean()), 4), "p10": round(float(np.quantile(v, 0.1)), 4)}
        return out


def gate_chunk(branch: str, frame: pd.DataFrame, gate: checks.Gate, params: dict, modes: dict, results: Path,
               tally: BranchTally, scores_json) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One chunk of a branch's scored rows through its gate: (kept rows, rejected rows), counted in tally.

    The gate's checks are row-wise, so chunking does not change which rows they keep; the one whole-set
    check, unique sample ids, holds for the whole manifest already (read_table refuses duplicates)."""
    if tally.chunks == 0:  # a branch's first chunk: results of an earlier, longer run's further chunks go
        for old in results.glob(f"{branch}.part*.json"):
            old.unlink()
    chunk = tally.chunks
    result = checks.gate_frame(frame, gate, params, modes=modes, results_path=_result_path(results, branch, chunk))
    where = f" (rows {tally.n}-{tally.n + len(frame) - 1})" if chunk or len(frame) < tally.total else ""
    for w in result.warnings:
        logger().warning("quality %s%s: %s", branch, where, w.line())
    k, r = result.kept.copy(), result.rejected.copy()
    for part, status in ((k, "kept"), (r, "rejected")):
        part["gate"] = status
        part["scores"] = scores_json(part)
    k["gate_reason"] = ""
    tally.add(frame, k, r, result)
    return k, r


def gate_branch(branch: str, frame: pd.DataFrame, gate: checks.Gate, params: dict, modes: dict, results: Path,
                scores: tuple[str, ...], scores_json) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """A whole branch's scored frame through its gate: (kept rows, rejected rows, the branch's summary)."""
    tally = BranchTally(scores)
    k, r = gate_chunk(branch, frame, gate, params, modes, results, tally, scores_json)
    return k, r, tally.summary()


def write_gate(root: Path, parts, summary: dict, results: Path, dev: dict) -> dict:
    """data/quality from `parts`, (kept, rejected) frames appended to manifest.parquet and rejected.parquet as
    they come (summary is complete once they are all read); then summary (with `dev`, where the scores were
    computed), metrics and the Data Docs."""
    log = logger()
    with atomic_dir(out_dir(root, "quality")) as tmp:
        writers = ManifestWriter(tmp / "manifest.parquet"), ManifestWriter(tmp / "rejected.parquet")
        for pair in parts:
            for w, frame in zip(writers, pair):
                w.write(frame)
        for w in writers:
            w.close()
        branches = [b for b in BRANCHES if b in summary]  # the modality's branches (texts have no crossdomain)
        docs = None
        if any(summary[b]["in"] for b in branches):
            try:
                docs = gx.build_data_docs(results, out_dir(root, "validation") / "quality-docs")
            except Exception as err:  # Data Docs are a view; a rendering failure must not drop the gate's results
                log.warning("quality: GE Data Docs not built: %s", err)
        metrics = {b: {**{k: summary[b][k] for k in ("in", "kept", "rejected", "pass_rate")},
                       **({"scores": summary[b]["score_summary"]} if summary[b].get("score_summary") else {})}
                   for b in branches}
        write_json(tmp / "summary.json", {**summary, **dev})
        write_json(tmp / "metrics.json", metrics)
    log.info("quality: %s%s", json.dumps(metrics), f"; Data Docs: {docs}" if docs else "")
    return {b: {k: summary[b][k] for k in ("in", "kept", "rejected")} for b in branches}
