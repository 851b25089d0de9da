"""The quality gate on audio (params `modality: audio`): the image gate on the spectrogram images
(tasks/quality/__init__.py: the reference classifier's label check on spectrograms, the outlier window, PSNR/SSIM
of a mix against its parents), with expectations/audio_branch.json and, for the traditional branch, the clip's
SNR against its source (augdag.audio.ops.snr_db: the source carried through the same shift, gain, speed and pitch,
so what is left is the added noise and any clipping; threshold audio.quality.snr_min, mode quality.modes.snr)
and PSNR/SSIM of its spectrogram against the source's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from augdag import imquality
from augdag.audio import ops
from augdag.audio.store import waves
from augdag.params import Params
from augdag.storage import StageData
from augdag.tasks import out_dir
from augdag.tasks.quality import run as image_run


def traditional_scores(root: Path, part: pd.DataFrame, sources: np.ndarray, images: np.ndarray) -> dict:
    raw = StageData.shared(out_dir(root, "ingest"))
    where = raw.lookup([ps[0] for ps in part.parent_ids], ["sample_id", "shard", "index"])
    clips = waves(out_dir(root, "ingest"), [dict(zip(where, v)) for v in zip(*where.values())])
    snr = np.array([ops.snr_db(c, json.loads(q)["ops"]) for c, q in zip(clips, part.op_params)], np.float64)
    return {"psnr": imquality.psnr_batch(images, sources), "ssim": imquality.ssim_batch(images, sources), "snr": snr}


def run(p: Params, root: Path, mapper=map, **_) -> dict:
    return image_run(p, Path(root), mapper, audio=p.audio.features)
