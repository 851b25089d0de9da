"""Audio augmentation ops, drawn apart from applied (as augdag/ops.py and torchvision v2): `make_params` draws a
clip's record from its seed, `apply` is a pure function of (source clip, record), so a record replays exactly.

Waveform ops, in this order, each with its probability: time shift (silence fills the gap), gain (dB), speed
perturbation (tempo and pitch: polyphase resampling by the factor, as Kaldi's 0.9/1.1 speed perturbation),
pitch shift (librosa's phase-vocoder time stretch, then resampled back to the length: same duration), and
background noise (white or pink Gaussian noise from its own seed, scaled to a drawn SNR against the clip as it is
at that point). Then the log-Mel (augdag/audio/features.py) and SpecAugment's ops on it (Park et al. 2019): time
warping (a frame moved, the time axis stretched linearly either side), frequency masks and time masks (bands set
to the floor, -top_db). Everything in float64; the clip is rounded to int16 before its spectrogram, as a stored
clip is.
"""

from __future__ import annotations

import numpy as np

from augdag.audio import features
from augdag.audio.data import fit, to_float, to_int16
from augdag.audio.params import AudioOpsParams, FeatureParams
from augdag.seeding import derive_seed, rng

WAVE_OPS = ("shift", "gain", "speed", "pitch", "noise")
SPEC_OPS = ("time_warp", "freq_mask", "time_mask")
OPS = WAVE_OPS + SPEC_OPS


def make_params(cfg: AudioOpsParams, seed: int, feats: FeatureParams) -> list[dict]:
    """The ops one clip draws, with every drawn value: a JSON-able record."""
    out: list[dict] = []
    for name in OPS:
        op = getattr(cfg, name)
        g = rng(seed, "audio-ops", name)  # a generator per op: one op's p or ranges do not move the others' draws
        if not g.random() < op.p:
            continue
        if name == "shift":
            most = int(round(op.max_seconds * feats.sample_rate))
            out.append({"op": name, "samples": int(g.integers(-most, most + 1))})
        elif name == "gain":
            out.append({"op": name, "db": round(float(g.uniform(*op.db)), 3)})
        elif name == "speed":
            out.append({"op": name, "factor": round(float(g.uniform(*op.factor)), 2)})
        elif name == "pitch":
            out.append({"op": name, "semitones": round(float(g.uniform(*op.semitones)), 2)})
        elif name == "noise":
            out.append({"op": name, "snr_db": round(float(g.uniform(*op.snr_db)), 2), "color": op.color,
                        "seed": derive_seed(seed, "audio-noise")})
        elif name == "time_warp":
            w = min(op.max_frames, (feats.frames - 1) // 2 - 1)
            if w < 1:
                continue
            centre = int(g.integers(w + 1, feats.frames - 1 - w))
            out.append({"op": name, "centre": centre, "shift": int(g.integers(-w, w + 1))})
        else:
            size = feats.n_mels if name == "freq_mask" else feats.frames
            bands = []
            for _ in range(op.count):
                width = int(g.integers(0, min(op.max_width, size) + 1))
                bands.append([int(g.integers(0, size - width + 1)), width])
            out.append({"op": name, "bands": bands})
    return out


# ---------------------------------------------------------------------------------------------- waveform

def _shift(x: np.ndarray, k: int) -> np.ndarray:
    y = np.zeros_like(x)
    if k >= 0:
        y[k:] = x[:len(x) - k]
    else:
        y[:k] = x[-k:]
    return y


def _speed(x: np.ndarray, factor: float) -> np.ndarray:
    from scipy.signal import resample_poly

    # factor is a multiple of 0.01: 100 / (100 * factor) is the polyphase ratio; faster speech is shorter
    return fit(resample_poly(x, 100, int(round(factor * 100))), len(x))


def _pitch(x: np.ndarray, semitones: float) -> np.ndarray:
    import librosa
    from scipy.signal import resample

    ratio = 2.0 ** (semitones / 12.0)
    stretched = librosa.effects.time_stretch(x, rate=1.0 / ratio)  # ratio times as long, same pitch
    return resample(stretched, len(x))  # squeezed back to the length: the pitch moves by the ratio


def _noise(n: int, color: str, seed: int) -> np.ndarray:
    z = np.random.Generator(np.random.PCG64(seed)).standard_normal(n)
    if color == "pink":  # power falling as 1/f: amplitudes scaled by 1/sqrt(f), DC left out
        spec = np.fft.rfft(z)
        f = np.arange(len(spec), dtype=np.float64)
        f[0] = np.inf
        z = np.fft.irfft(spec / np.sqrt(f), n)
    return z


def apply_wave(x: np.ndarray, record: list[dict], noise: bool = True) -> np.ndarray:
    """float64 samples through the record's waveform ops (noise=False: all but the noise)."""
    y = np.asarray(x, np.float64)
    for op in record:
        name = op["op"]
        if name == "shift":
            y = _shift(y, int(op["samples"]))
        elif name == "gain":
            y = y * 10.0 ** (float(op["db"]) / 20.0)
        elif name == "speed":
            y = _speed(y, float(op["factor"]))
        elif name == "pitch":
            y = _pitch(y, float(op["semitones"]))
        elif name == "noise" and noise:
            power = float(np.mean(y * y))
            if power > 0:
                z = _noise(len(y), op["color"], int(op["seed"]))
                y = y + z * np.sqrt(power / (10.0 ** (float(op["snr_db"]) / 10.0)) / float(np.mean(z * z)))
        elif name not in OPS:
            raise ValueError(f"unknown audio op {name!r} in a record (ops: {', '.join(OPS)})")
    return y


# ----------------------------------------------------------------------------------------- spectrogram

def _time_warp(db: np.ndarray, centre: int, shift: int) -> np.ndarray:
    """Frame `centre` moved to centre + shift; each side stretched linearly (frame 0 and the last stay)."""
    t = db.shape[1]
    dest = centre + shift
    out_t = np.arange(t, dtype=np.float64)
    src = np.where(out_t <= dest, out_t * centre / dest,
                   centre + (out_t - dest) * (t - 1 - centre) / (t - 1 - dest))
    lo = np.clip(np.floor(src).astype(np.int64), 0, t - 1)
    hi = np.minimum(lo + 1, t - 1)
    frac = src - lo
    return db[:, lo] * (1.0 - frac) + db[:, hi] * frac


def apply_spec(db: np.ndarray, record: list[dict], floor: float) -> np.ndarray:
    """dB (n_mels x frames, low bins first) through the record's spectrogram ops."""
    out = np.array(db, np.float64)
    for op in record:
        name = op["op"]
        if name == "time_warp":
            out = _time_warp(out, int(op["centre"]), int(op["shift"]))
        elif name in ("freq_mask", "time_mask"):
            for start, width in op["bands"]:
                if name == "freq_mask":
                    out[start:start + width, :] = floor
                else:
                    out[:, start:start + width] = floor
    return out


# -------------------------------------------------------------------------------------------- together

def augment(wave: np.ndarray, record: list[dict], feats: FeatureParams) -> tuple[np.ndarray, np.ndarray]:
    """(the clip through the waveform ops as int16, its spectrogram image through the spectrogram ops) of an
    int16 source clip: the replayable unit."""
    y = to_int16(apply_wave(to_float(wave), record))
    db = apply_spec(features.mel_db(to_float(y), feats), record, -feats.top_db)
    return y, features.db_to_image(db, feats.top_db)


def snr_db(wave: np.ndarray, record: list[dict]) -> float:
    """The augmented clip against its source carried through the same ops without the noise: 10 log10 of signal
    over residual power (the noise, and what clipping made of it). NaN when the record adds no noise."""
    noise = [op for op in record if op["op"] == "noise"]
    if not noise:
        return float("nan")
    before = apply_wave(to_float(wave), record, noise=False)  # noise is the last waveform op (WAVE_OPS' order)
    clean = to_float(to_int16(before))
    noisy = to_float(to_int16(apply_wave(before, noise)))
    residual = float(np.sum((noisy - clean) ** 2))
    signal = float(np.sum(clean ** 2))
    if residual == 0:  # a silent clip gets no noise
        return float("nan")
    return 10.0 * np.log10(max(signal, 1e-20) / residual)
