"""The log-Mel spectrogram a clip becomes, and the clip's WAV bytes for the report.

A clip of (frames - 1) * hop_length samples gives `frames` STFT frames (centred, librosa's default); its Mel
power in dB under full scale (a full-scale sine's band is about 0 dB), clipped to [-top_db, 0] and mapped
linearly onto 0..255, is stored as an n_mels x frames x 1 uint8 image, low frequencies at the bottom row. The
image stages (mix, generative, merge, fine-tune, evaluate) take it as they take a grey image. Computed in float64
with numpy's FFT: the same bytes on every x86-64 CPU.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np

from augdag.audio.params import FeatureParams


@lru_cache(maxsize=8)
def _mel_basis(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    import librosa

    # norm=None: each triangle peaks at 1, so a full-scale sine at a band's centre reads 0 dB
    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, norm=None, dtype=np.float64)


def mel_db(x: np.ndarray, cfg: FeatureParams) -> np.ndarray:
    """n_mels x frames dB (float64) of float samples in [-1, 1] (cut or padded to the clip length first)."""
    import librosa

    from augdag.audio.data import fit

    x = fit(np.asarray(x, np.float64), cfg.clip_samples)
    spec = np.abs(librosa.stft(x, n_fft=cfg.n_fft, hop_length=cfg.hop_length, window="hann", center=True,
                               pad_mode="constant")) ** 2
    # 4 / n_fft^2 scales a full-scale sine's Hann-windowed peak to about 1 (0 dB)
    mel = _mel_basis(cfg.sample_rate, cfg.n_fft, cfg.n_mels) @ spec * (4.0 / (cfg.n_fft / 2) ** 2)
    db = 10.0 * np.log10(np.maximum(mel, 1e-20))
    return db[:, :cfg.frames]


def db_to_image(db: np.ndarray, top_db: float) -> np.ndarray:
    """dB (n_mels x frames) -> n_mels x frames x 1 uint8, low frequencies at the bottom."""
    q = np.rint((np.clip(db, -top_db, 0.0) + top_db) * (255.0 / top_db))
    return q[::-1, :, None].astype(np.uint8)


def image_to_db(image: np.ndarray, top_db: float) -> np.ndarray:
    """The inverse of db_to_image (up to its quantisation: top_db / 255 dB)."""
    return image[::-1, :, 0].astype(np.float64) * (top_db / 255.0) - top_db


def log_mel(x: np.ndarray, cfg: FeatureParams) -> np.ndarray:
    """float samples -> the stored uint8 spectrogram image."""
    return db_to_image(mel_db(x, cfg), cfg.top_db)


def wav_bytes(wave: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV of int16 samples (for the report's <audio> elements)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(wave, np.int16), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def invert(image: np.ndarray, cfg: FeatureParams, iterations: int = 32, seed: int = 0) -> np.ndarray:
    """A waveform whose log-Mel is about `image` (librosa's Griffin-Lim through the Mel pseudo-inverse): how a
    spectrogram-only sample (a Mixup) sounds. An approximation to listen to, not a sample."""
    import librosa

    power = 10.0 ** (image_to_db(image, cfg.top_db) / 10.0) / (4.0 / (cfg.n_fft / 2) ** 2)
    power[image[::-1, :, 0] == 0] = 0.0
    mag = librosa.feature.inverse.mel_to_stft(power, sr=cfg.sample_rate, n_fft=cfg.n_fft, power=2.0, norm=None)
    return librosa.griffinlim(mag, n_iter=iterations, hop_length=cfg.hop_length, n_fft=cfg.n_fft, center=True,
                              pad_mode="constant", length=cfg.clip_samples, random_state=seed)
