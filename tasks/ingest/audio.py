"""The ingest stage on audio (params `modality: audio`, settings in `audio.ingest` and `audio.features`).

A folder of WAV/FLAC files per class (or the synthesised spoken digits): every file checked as image folders
are (links outside the folder, non-regular files, names that are not UTF-8, wrong suffixes; then decoded by
content, bounded by audio.ingest.max_seconds), resampled, trimmed and cut or padded to one clip length, split as
image folders are, and stored as log-Mel spectrogram images with their clips (augdag/audio/store.py). The raw
suites are the images' (expectations/raw*.json), on n_mels x frames x 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from augdag.audio import assets, features
from augdag.audio.data import AUDIO_SUFFIXES, load_clip, to_float
from augdag.audio.store import AudioWriter
from augdag.data import Problem, problems_report, survey_folder
from augdag.log import Progress, logger
from augdag.params import Params
from augdag.storage import StageData, atomic_dir, content_hash, write_json
from augdag.tasks import out_dir
from augdag.tasks.ingest import decode_all, split_folder, validate

NOUN = "audio file"


def check_folder(p: Params) -> tuple[Path, list[str], list[tuple[Path, int]], list[Problem]]:
    """(folder, classes, good files, problems): every file decoded, so a bad file is found now; with problems and
    on_bad_file: fail, a DataError listing them all."""
    ai = p.audio.ingest
    root = assets.folder() if ai.source == "spoken-digits" else Path(ai.source)
    classes, files, problems = survey_folder(root, suffixes=AUDIO_SUFFIXES, noun=NOUN)
    classes, good, problems = decode_all(
        root, classes, files, problems, lambda path: _load(p, path),
        lambda err: "too long" if "max_seconds" in err else "corrupt or unreadable audio",
        ai.on_bad_file, "audio.ingest.on_bad_file", "audio file")
    return root, classes, good, problems


def _load(p: Params, path: Path):
    ai, feats = p.audio.ingest, p.audio.features
    return load_clip(path, feats.sample_rate, feats.clip_samples, ai.max_seconds, ai.trim_db, ai.align)


def run(p: Params, root: Path, **_) -> dict:
    root = Path(root)
    ai, feats = p.audio.ingest, p.audio.features
    folder, classes, files, rejected = check_folder(p)
    if rejected:
        logger().warning("ingest: %d bad file(s) left out (audio.ingest.on_bad_file: skip), listed in "
                         "data/ingest/rejected.csv\n%s", len(rejected), problems_report(folder, rejected))
    chosen = split_folder(folder, classes, files, ai, p.seed, NOUN)
    source = "spoken-digits (espeak-ng)" if ai.source == "spoken-digits" else str(folder)
    logger().info("ingest (audio): %d clips, %d classes from %s", len(chosen), len(classes), source)
    with atomic_dir(out_dir(root, "ingest")) as tmp:
        w = AudioWriter(tmp, p.ingest.shard_size)
        progress = Progress("ingest", len(chosen))
        for path, split, c in chosen:
            wave = _load(p, path)  # again: the check kept no clip, so memory stays bounded
            w.add_clip(features.log_mel(to_float(wave), feats), wave, sample_id=path.relative_to(folder).as_posix(),
                       split=split, branch="raw", label=c, parent_ids=[], source=str(path), op_params="{}")
            progress.update()
        manifest = w.close()
        write_json(tmp / "classes.json", {"classes": classes})
        results = out_dir(root, "validation") / "ingest"
        results.mkdir(parents=True, exist_ok=True)
        validate(manifest, classes, _ImageShape(feats.n_mels, ai), results_dir=results)
        summary = {"classes": len(classes), "modality": "audio", "sample_rate": feats.sample_rate,
                   "clip_samples": feats.clip_samples, "features": feats.model_dump(),
                   **{s: int((manifest.split == s).sum()) for s in ("train", "val", "test")}}
        if ai.source == "spoken-digits":
            summary["dataset_digest"] = (folder / assets.DONE).read_text().strip()
        if rejected:
            pd.DataFrame(rejected, columns=list(Problem._fields)).to_csv(tmp / "rejected.csv", index=False)
            summary["rejected"] = len(rejected)
        write_json(tmp / "summary.json", summary)
    return summary


class _ImageShape:
    """What the image ingest's `validate` reads of its params, for spectrogram images."""

    def __init__(self, size: int, ai):
        self.image_size, self.channels = size, 1
        self.n_per_class, self.n_val_per_class, self.n_test_per_class = (ai.n_per_class, ai.n_val_per_class,
                                                                         ai.n_test_per_class)


def replay(root: Path, r: dict, params: Params | None = None) -> dict:
    """A raw clip is not regenerated: the hash of its stored spectrogram, and whether it is still its clip's."""
    from augdag.audio.store import waves

    folder = out_dir(root, "ingest")
    image = StageData(folder, manifest=False).image(r)
    out = {"replayed_hash": content_hash(image), "note": "raw clip: hash of the stored spectrogram"}
    if params is not None:
        wave = waves(folder, [r])[0]
        out["params_redrawn_match"] = bool(np.array_equal(features.log_mel(to_float(wave), params.audio.features),
                                                          image))
    return out
