"""Reading audio files: a folder of WAV/FLAC files per class, each decoded (soundfile: libsndfile, by content),
mixed to mono, resampled to the params' rate, trimmed of leading/trailing silence and cut or padded to one
clip length; int16 samples."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from augdag.errors import DataError

AUDIO_SUFFIXES = {".wav", ".flac"}
AUDIO_FORMATS = {"WAV", "FLAC"}  # decoded by content: a .wav holding another container is refused


def to_float(wave: np.ndarray) -> np.ndarray:
    """int16 samples as float64 in [-1, 1)."""
    return np.asarray(wave, np.float64) / 32768.0


def to_int16(x: np.ndarray) -> np.ndarray:
    """float samples clipped to [-1, 1) and rounded to int16 (half to even, as numpy rounds)."""
    return np.clip(np.rint(np.asarray(x, np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling (scipy's resample_poly, float64: the same bytes on every x86-64 CPU; soxr's kernels
    are chosen per CPU)."""
    if rate == target:
        return x
    from scipy.signal import resample_poly

    g = math.gcd(rate, target)
    return resample_poly(x, target // g, rate // g)


def trim(x: np.ndarray, top_db: float | None) -> np.ndarray:
    """Leading and trailing audio quieter than top_db under the peak cut off (librosa.effects.trim's rule on
    512-sample frames); all-quiet audio is kept as it is."""
    if top_db is None or not len(x) or not np.any(x):
        return x
    import librosa

    _, (start, end) = librosa.effects.trim(x, top_db=top_db, frame_length=512, hop_length=128)
    return x[start:end] if end > start else x


def fit(x: np.ndarray, n: int, align: str = "start") -> np.ndarray:
    """n samples: cut (the middle kept when centred) or padded with silence (at the end, or both sides)."""
    extra = len(x) - n
    if align == "centre":
        return x[extra // 2:extra // 2 + n] if extra >= 0 else np.pad(x, (-extra // 2, -extra - (-extra // 2)))
    return x[:n] if extra >= 0 else np.concatenate([x, np.zeros(-extra, x.dtype)])


def load_clip(path: Path, sample_rate: int, clip_samples: int, max_seconds: float,
              trim_db: float | None, align: str = "start") -> np.ndarray:
    """One file as `clip_samples` int16 samples at `sample_rate`: DataError naming the file for what is not
    audio (by its content), empty, longer than `max_seconds`, or holding non-finite samples."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError, OSError) as err:
        raise DataError(f"{path}: not a readable WAV or FLAC file (by its content, whatever its suffix): "
                        f"{str(err).splitlines()[0]}") from None
    if info.format not in AUDIO_FORMATS:
        raise DataError(f"{path}: a {info.format} file; allowed: {', '.join(sorted(AUDIO_FORMATS))}")
    if info.frames <= 0 or info.channels <= 0 or info.samplerate <= 0:
        raise DataError(f"{path}: holds no audio ({info.frames} frames, {info.channels} channels)")
    if info.frames / info.samplerate > max_seconds:
        raise DataError(f"{path}: {info.frames / info.samplerate:.1f} s exceeds audio.ingest.max_seconds="
                        f"{max_seconds}; refused")
    try:
        data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, OSError, ValueError) as err:
        raise DataError(f"{path}: corrupt or unreadable audio: {str(err).splitlines()[0]}") from None
    if not np.isfinite(data).all():
        raise DataError(f"{path}: holds NaN or infinite samples; refused")
    x = data.mean(axis=1)
    x = resample(x, int(rate), sample_rate)
    return to_int16(fit(trim(x, trim_db), clip_samples, align))
