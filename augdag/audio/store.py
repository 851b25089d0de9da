"""Clips beside spectrograms: a stage output of the audio modality holds the spectrogram images as any image
stage does (shards/*.npy, N x n_mels x frames x 1 uint8) and the clips they were computed from in waves/, one
N x samples int16 .npy per image shard, under the same name and at the same index."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from augdag import faults
from augdag.errors import DataError
from augdag.storage import SHARDS, StageWriter
from augdag.storage.schema import _SHARD_NAME

WAVES = "waves"


class AudioWriter(StageWriter):
    """StageWriter that keeps each image's clip and saves a shard's clips when it saves its images."""

    def __init__(self, folder: Path, shard_size: int = 4096, prefix: str = "shard"):
        super().__init__(folder, shard_size, prefix)
        (self.folder / WAVES).mkdir(parents=True, exist_ok=True)
        self._waves: list[np.ndarray] = []

    def add_clip(self, image: np.ndarray, wave: np.ndarray, **fields) -> dict:
        if wave.dtype != np.int16 or wave.ndim != 1:
            raise ValueError(f"clips are 1-D int16, got {wave.dtype} {wave.shape}")
        if self._waves and self._waves[0].shape != wave.shape:
            raise ValueError(f"clips of one stage have one length: {wave.shape[0]} after {self._waves[0].shape[0]}")
        self._waves.append(wave)
        return self.add(image, **fields)

    def _flush(self) -> None:
        if self._pending:
            if len(self._waves) != len(self._pending):
                raise ValueError("AudioWriter: every image needs its clip (add_clip)")
            name = f"{self.prefix}-{self._n_shards:05d}.npy"
            np.save(self.folder / WAVES / name, np.stack(self._waves), allow_pickle=False)
            faults.wrote(self.folder / WAVES / name)
            self._waves = []
        super()._flush()


def _open(folder: Path, name: str) -> np.ndarray:
    path = Path(folder) / WAVES / str(name)
    if not isinstance(name, str) or not _SHARD_NAME.fullmatch(name) or not path.is_file():
        raise DataError(f"{path}: the clips of shard {name!r} are missing (an audio stage output keeps them in "
                        f"{WAVES}/ beside {SHARDS}/); rerun the stage")
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{path}: not a readable clip shard: {err}") from None
    if a.dtype != np.int16 or a.ndim != 2:
        raise DataError(f"{path}: clip shards hold N x samples int16 arrays, this one holds {a.dtype} {a.shape}")
    return a


def waves(folder: Path, rows) -> list[np.ndarray]:
    """The clips of manifest rows (dicts or a frame with shard and index), in order."""
    recs = rows.to_dict("records") if hasattr(rows, "to_dict") else list(rows)
    opened: dict[str, np.ndarray] = {}
    out = []
    for r in recs:
        name, i = r.get("shard"), r.get("index")
        if name not in opened:
            opened[name] = _open(folder, name)
        a = opened[name]
        if i is None or not 0 <= int(i) < len(a):
            raise DataError(f"{Path(folder) / WAVES / str(name)}: sample {r.get('sample_id')!r} points at index {i}, "
                            f"which holds {len(a)} clips")
        out.append(np.array(a[int(i)]))
    return out
