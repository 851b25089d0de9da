"""Audio as a third modality (issue 32): reading clips, the log-Mel, the waveform and SpecAugment ops (drawn apart
from applied, replayed exactly), the SNR check, params, and the spoken-digits dataset synthesised at setup."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from augdag.audio import assets, data, features, ops
from augdag.audio.params import AudioOpsParams, AudioParams, FeatureParams
from augdag.errors import DataError, ParamsError
from augdag.params import parse_params

FEATS = FeatureParams()
SR = FEATS.sample_rate


def tone(freq: float, seconds: float = 0.5, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return amp * np.sin(2 * np.pi * freq * t)


def clip(freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    return data.to_int16(data.fit(tone(freq, amp=amp), FEATS.clip_samples))


def all_ops(**ps) -> AudioOpsParams:
    return AudioOpsParams.model_validate({name: {"p": ps.get(name, 0.0)} for name in ops.OPS})


# ------------------------------------------------------------------------------------------------ reading

def test_a_clip_is_resampled_mixed_to_mono_trimmed_and_padded(tmp_path):
    stereo = np.stack([tone(440, 0.3, 22050), tone(440, 0.3, 22050)], axis=1)
    silence = np.zeros((22050 // 4, 2))
    path = tmp_path / "a.flac"
    sf.write(path, np.concatenate([silence, stereo, silence]), 22050, format="FLAC")
    wave = data.load_clip(path, SR, FEATS.clip_samples, 30, 40.0)
    assert wave.dtype == np.int16 and wave.shape == (FEATS.clip_samples,)
    sound = np.flatnonzero(np.abs(wave) > 300)
    assert sound[0] < 200  # the leading quarter second of silence was trimmed
    assert 0.28 * SR < sound[-1] - sound[0] < 0.32 * SR  # 0.3 s of tone at the new rate
    assert not wave[int(0.35 * SR):].any()  # padded with silence
    untrimmed = data.load_clip(path, SR, FEATS.clip_samples, 30, None)
    assert np.flatnonzero(np.abs(untrimmed) > 300)[0] > 0.24 * SR
    centred = np.flatnonzero(np.abs(data.load_clip(path, SR, FEATS.clip_samples, 30, 40.0, "centre")) > 300)
    assert abs((centred[0] + centred[-1]) / 2 - FEATS.clip_samples / 2) < 200  # the sound in the middle


@pytest.mark.parametrize("content, match", [
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "not a readable WAV or FLAC file"),
    (b"", "not a readable WAV or FLAC file"),
])
def test_a_file_that_is_not_audio_by_its_content_is_refused(tmp_path, content, match):
    path = tmp_path / "x.wav"
    path.write_bytes(content)
    with pytest.raises(DataError, match=match):
        data.load_clip(path, SR, FEATS.clip_samples, 30, 40.0)


def test_a_file_too_long_or_holding_nan_is_refused(tmp_path):
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(SR * 3), SR)
    with pytest.raises(DataError, match=r"exceeds audio.ingest.max_seconds=2"):
        data.load_clip(long, SR, FEATS.clip_samples, 2, 40.0)
    nan = tmp_path / "nan.wav"
    x = tone(300, 0.2)
    x[5] = np.nan
    sf.write(nan, x, SR, subtype="FLOAT")
    with pytest.raises(DataError, match="NaN or infinite"):
        data.load_clip(nan, SR, FEATS.clip_samples, 30, 40.0)


# ------------------------------------------------------------------------------------------------ features

def test_a_full_scale_sine_reads_near_zero_db_in_its_band_and_the_image_is_upside_down():
    db = features.mel_db(tone(1000, 1.0, amp=1.0)[:FEATS.clip_samples], FEATS)
    assert db.shape == (FEATS.n_mels, FEATS.frames)
    peak_bin = int(np.argmax(db[:, 32]))
    assert -3.0 < db[peak_bin, 32] < 0.5
    image = features.db_to_image(db, FEATS.top_db)
    assert image.shape == (64, 64, 1) and image.dtype == np.uint8
    assert int(np.argmax(image[:, 32, 0])) == FEATS.n_mels - 1 - peak_bin  # low frequencies at the bottom
    back = features.image_to_db(image, FEATS.top_db)
    assert np.abs(back - np.clip(db, -80, 0)).max() <= FEATS.top_db / 255 / 2 + 1e-9


def test_a_spectrogram_inverts_to_a_clip_with_about_the_same_spectrogram():
    image = features.log_mel(data.to_float(clip(700)), FEATS)
    wave = features.invert(image, FEATS)
    assert wave.shape == (FEATS.clip_samples,)
    again = features.log_mel(wave, FEATS).astype(int)
    assert np.abs(again - image.astype(int)).mean() < 6  # of 255 levels: Griffin-Lim is approximate
    assert np.array_equal(features.invert(image, FEATS, seed=0), wave)  # seeded


def test_wav_bytes_read_back_as_the_clip():
    import io

    wave = clip(500)
    back, rate = sf.read(io.BytesIO(features.wav_bytes(wave, SR)), dtype="int16")
    assert rate == SR and np.array_equal(back, wave)


# ----------------------------------------------------------------------------------------------------- ops

def test_records_are_drawn_from_the_seed_and_replay_to_the_same_bytes():
    cfg = AudioOpsParams.model_validate({name: {"p": 1.0} for name in ops.OPS})
    a, b = ops.make_params(cfg, 7, FEATS), ops.make_params(cfg, 7, FEATS)
    assert a == b and [op["op"] for op in a] == list(ops.OPS)
    assert ops.make_params(cfg, 8, FEATS) != a
    rec = json.loads(json.dumps(a))  # as the manifest keeps it
    w1, i1 = ops.augment(clip(), a, FEATS)
    w2, i2 = ops.augment(clip(), rec, FEATS)
    assert np.array_equal(w1, w2) and np.array_equal(i1, i2)


def test_one_ops_probability_does_not_move_the_others_draws():
    on = ops.make_params(all_ops(gain=1.0, noise=1.0, time_mask=1.0), 3, FEATS)
    off = ops.make_params(all_ops(gain=1.0, noise=0.0, time_mask=1.0), 3, FEATS)
    assert [op for op in on if op["op"] != "noise"] == off
    assert ops.make_params(all_ops(), 3, FEATS) == []


def test_shift_and_gain_do_what_they_record():
    x = data.to_float(clip())
    shifted = ops.apply_wave(x, [{"op": "shift", "samples": 100}])
    assert np.array_equal(shifted[100:], x[:-100]) and not shifted[:100].any()
    left = ops.apply_wave(x, [{"op": "shift", "samples": -100}])
    assert np.array_equal(left[:-100], x[100:]) and not left[-100:].any()
    louder = ops.apply_wave(x, [{"op": "gain", "db": 6.0}])
    assert np.allclose(louder, x * 10 ** (6 / 20))


def _centroid(x: np.ndarray) -> float:
    """The strongest frequency (Hz)."""
    spec = np.abs(np.fft.rfft(x))
    return float(np.fft.rfftfreq(len(x), 1 / SR)[np.argmax(spec)])


def _length(x: np.ndarray) -> int:
    return int(np.flatnonzero(np.abs(x) > 0.05)[-1])


def test_speed_changes_length_and_pitch_pitch_changes_only_pitch():
    x = data.to_float(clip(440))
    faster = ops.apply_wave(x, [{"op": "speed", "factor": 1.1}])
    assert abs(_length(faster) - _length(x) / 1.1) < 40
    assert _centroid(faster) == pytest.approx(440 * 1.1, rel=0.03)
    higher = ops.apply_wave(x, [{"op": "pitch", "semitones": 2.0}])
    assert _centroid(higher) == pytest.approx(440 * 2 ** (2 / 12), rel=0.03)
    assert abs(_length(higher) - _length(x)) < 600  # the same duration, up to the vocoder's edges


@pytest.mark.parametrize("color", ["white", "pink"])
def test_noise_is_added_at_the_drawn_snr_and_the_gate_measures_it(color):
    rec = [{"op": "gain", "db": -3.0}, {"op": "noise", "snr_db": 12.5, "color": color, "seed": 11}]
    assert ops.snr_db(clip(), rec) == pytest.approx(12.5, abs=0.05)
    assert np.isnan(ops.snr_db(clip(), rec[:1]))  # no noise: nothing to measure
    z = ops._noise(FEATS.clip_samples, color, 1)
    spec = np.abs(np.fft.rfft(z)) ** 2
    low_share = spec[:len(spec) // 8].sum() / spec.sum()  # the power under 1 kHz
    assert (low_share > 0.5) == (color == "pink")


def test_clipping_lowers_the_measured_snr():
    rec = [{"op": "gain", "db": 20.0}, {"op": "noise", "snr_db": 30.0, "color": "white", "seed": 2}]
    assert ops.snr_db(clip(amp=0.9), rec) < 25  # gain then noise over full scale: the clipping is residual too


def test_specaugment_masks_set_bands_to_the_floor_and_warp_keeps_the_ends():
    db = features.mel_db(data.to_float(clip(700)), FEATS)
    masked = ops.apply_spec(db, [{"op": "freq_mask", "bands": [[10, 4]]}, {"op": "time_mask", "bands": [[20, 3]]}],
                            -80.0)
    assert (masked[10:14] == -80).all() and (masked[:, 20:23] == -80).all()
    assert np.array_equal(masked[:10, :20], db[:10, :20])
    warped = ops.apply_spec(db, [{"op": "time_warp", "centre": 30, "shift": 4}], -80.0)
    assert np.allclose(warped[:, 0], db[:, 0]) and np.allclose(warped[:, -1], db[:, -1])
    assert np.allclose(warped[:, 34], db[:, 30])  # the centre frame moved by the shift
    assert not np.allclose(warped, db)


def test_an_unknown_op_in_a_record_is_named():
    with pytest.raises(ValueError, match="unknown audio op 'echo'"):
        ops.apply_wave(np.zeros(10), [{"op": "echo"}])


# -------------------------------------------------------------------------------------------------- params

@pytest.mark.parametrize("over, key", [
    ({"features": {"n_mels": 32}}, "n_mels (32) and frames (64) must be equal"),
    ({"features": {"hop_length": 16, "n_fft": 2048}}, "n_fft (2048) is longer than the clip"),
    ({"traditional": {"ops": {"gain": {"db": [6, -6]}}}}, "audio.traditional.ops.gain.db"),
    ({"traditional": {"ops": {"speed": {"factor": [0.1, 1.0]}}}}, "must lie within [0.5, 2.0]"),
    ({"traditional": {"ops": {"noise": {"color": "brown"}}}}, "audio.traditional.ops.noise.color"),
    ({"ingest": {"on_bad_file": "ignore"}}, "audio.ingest.on_bad_file"),
])
def test_bad_audio_params_name_their_key(over, key):
    with pytest.raises(ParamsError) as err:
        parse_params({"modality": "audio", "audio": over})
    assert key in str(err.value)


def test_crossdomain_is_refused_on_audio():
    with pytest.raises(ParamsError, match="not available with modality: audio"):
        parse_params({"modality": "audio", "strategy": {"crossdomain": {"enabled": True}}})


def test_the_clip_length_follows_frames_and_hop():
    assert AudioParams().features.clip_samples == 63 * 256
    assert FeatureParams(n_mels=32, frames=32, hop_length=128).clip_samples == 31 * 128


# ------------------------------------------------------------------------------------------- the dataset

def test_the_synthesis_plan_covers_every_word_voice_speed_and_pitch():
    items = assets.clips()
    assert len(items) == len(assets.WORDS) * len(assets.ACCENTS) * len(assets.VARIANTS) * 3 * 3 == 2520
    assert len({(w, n) for w, n, _ in items}) == len(items)


def _spoken_digits_or_skip() -> Path:
    try:
        return assets.folder()
    except DataError as err:
        if os.geteuid() == 0:  # CI runs as root: make setup installs espeak-ng and synthesises the set there
            pytest.fail(str(err))
        pytest.skip(str(err))


def test_the_synthesised_dataset_is_complete_and_matches_its_digest():
    folder = _spoken_digits_or_skip()
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == sorted(assets.WORDS)
    assert len(list(folder.rglob("*.wav"))) == 2520
    assert (folder / assets.DONE).read_text().strip() == assets.digest(folder)


def test_espeak_ng_makes_the_same_bytes_again(tmp_path):
    folder = _spoken_digits_or_skip()
    if shutil.which("espeak-ng") is None:
        pytest.fail("the dataset is there but espeak-ng is not")
    import subprocess

    word, name, args = assets.clips()[123]
    out = tmp_path / "again.wav"
    subprocess.run(["espeak-ng", *args, "-w", str(out), word], check=True, capture_output=True)
    assert out.read_bytes() == (folder / word / name).read_bytes()
