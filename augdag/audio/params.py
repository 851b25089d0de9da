"""Typed settings of the audio modality (params `modality: audio`, section `audio`), in the style of
augdag/params.py. See augdag/audio/ops.py for what each op does and augdag/audio/features.py for the log-Mel."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):  # as augdag.params._Strict; not imported from there (that would import torch)
    model_config = ConfigDict(extra="forbid", frozen=True)


Prob = Field(default=0.0, ge=0.0, le=1.0, description="probability that the op is applied to a clip")

BUILTIN_SOURCES = ("spoken-digits",)


def Range(low: float, high: float):  # noqa: N802 (a type)
    """A [lo, hi] pair with low <= lo <= hi <= high."""
    def check(v: list[float]) -> list[float]:
        if len(v) != 2 or v[0] > v[1]:
            raise ValueError(f"a [low, high] pair with low <= high, got {list(v)}")
        if v[0] < low or v[1] > high:
            raise ValueError(f"must lie within [{low}, {high}], got {list(v)}")
        return v
    return Annotated[list[float], AfterValidator(check)]


class AudioIngestParams(_Strict):
    source: str = Field(
        default="spoken-digits",
        description="'spoken-digits' (English digits zero..nine synthesised at setup by espeak-ng in 7 accents, "
                    "4 voices, 3 speeds and 3 pitches: python -m augdag.audio.assets prepare), or a folder with "
                    "one subfolder of WAV/FLAC files per class")
    n_per_class: int | None = Field(default=8, ge=1, description="train clips per class; null = all left")
    n_val_per_class: int = Field(default=10, ge=0)
    n_test_per_class: int = Field(default=50, ge=1)
    max_seconds: float = Field(default=30.0, gt=0, le=3600,
                               description="a file longer than this is refused (read before it is decoded)")
    trim_db: float | None = Field(default=40.0, gt=0, le=120,
                                  description="trim leading and trailing audio quieter than this many dB under the "
                                              "clip's peak before padding/cutting (null = no trim)")
    align: str = Field(default="centre", pattern="^(centre|start)$",
                       description="where a (trimmed) sound sits in its clip: centre (padded both sides, so a time "
                                   "shift either way keeps it whole) | start (padded at the end)")
    on_bad_file: str = Field(default="fail", pattern="^(fail|skip)$",
                             description="a folder's bad files: fail lists every one and stops | skip leaves them "
                                         "out (listed in data/ingest/rejected.csv)")


class FeatureParams(_Strict):
    """The log-Mel spectrogram every clip becomes (the model's input, stored as a 1-channel uint8 image of
    n_mels x frames): clips are (frames - 1) * hop_length samples long, power dB clipped to [-top_db, 0] under
    the full-scale reference and quantised to 256 levels."""

    sample_rate: int = Field(default=16000, ge=4000, le=96000, description="Hz; other rates are resampled at ingest")
    n_fft: int = Field(default=512, ge=64, le=8192)
    hop_length: int = Field(default=256, ge=16, le=8192)
    n_mels: int = Field(default=64, ge=8, le=256)
    frames: int = Field(default=64, ge=8, le=2048, description="spectrogram frames: the clip length is "
                                                               "(frames - 1) * hop_length samples")
    top_db: float = Field(default=80.0, gt=10, le=160, description="the dB range kept under full scale")

    @model_validator(mode="after")
    def _sizes(self):
        if self.n_mels != self.frames:
            raise ValueError(f"n_mels ({self.n_mels}) and frames ({self.frames}) must be equal: the spectrograms go "
                             "through the image stages as square images")
        if self.n_fft > (self.frames - 1) * self.hop_length:
            raise ValueError(f"n_fft ({self.n_fft}) is longer than the clip ((frames - 1) * hop_length = "
                             f"{(self.frames - 1) * self.hop_length} samples)")
        return self

    @property
    def clip_samples(self) -> int:
        return (self.frames - 1) * self.hop_length


class ShiftParams(_Strict):
    """Time shift: the clip moved by up to `max_seconds` either way, the gap filled with silence."""

    p: float = Prob
    max_seconds: float = Field(default=0.1, ge=0, le=10)


class GainParams(_Strict):
    p: float = Prob
    db: Range(-60, 40) = Field(default=[-6.0, 6.0], description="gain drawn uniformly in dB")


class SpeedParams(_Strict):
    """Speed perturbation (tempo and pitch together, as Kaldi's 0.9/1.0/1.1): resampled by the factor."""

    p: float = Prob
    factor: Range(0.5, 2.0) = Field(default=[0.9, 1.1])


class PitchParams(_Strict):
    """Pitch shift by a drawn number of semitones at the same duration (librosa's phase vocoder, then resampled)."""

    p: float = Prob
    semitones: Range(-12, 12) = Field(default=[-2.0, 2.0])


class NoiseParams(_Strict):
    """Background noise at a drawn signal-to-noise ratio (white or pink Gaussian noise from the clip's seed)."""

    p: float = Prob
    snr_db: Range(-20, 100) = Field(default=[10.0, 30.0])
    color: str = Field(default="pink", pattern="^(white|pink)$")


class MaskParams(_Strict):
    """SpecAugment masking (Park et al. 2019): `count` bands of width drawn in [0, max_width], set to the floor."""

    p: float = Prob
    count: int = Field(default=2, ge=1, le=10)
    max_width: int = Field(default=8, ge=1, le=256, description="mel bins or frames")


class WarpParams(_Strict):
    """SpecAugment time warping: a frame moved by up to `max_frames`, the time axis stretched linearly each side."""

    p: float = Prob
    max_frames: int = Field(default=5, ge=1, le=100)


class AudioOpsParams(_Strict):
    """Waveform ops (in this order), then spectrogram ops (SpecAugment, in this order), each with probability p."""

    shift: ShiftParams = ShiftParams(p=0.5)
    gain: GainParams = GainParams(p=0.5)
    speed: SpeedParams = SpeedParams(p=0.3)
    pitch: PitchParams = PitchParams(p=0.3)
    noise: NoiseParams = NoiseParams(p=0.5)
    time_warp: WarpParams = WarpParams(p=0.0)
    freq_mask: MaskParams = MaskParams(p=0.0)  # SpecAugment is off by default: waveform ops alone did better on
    time_mask: MaskParams = MaskParams(p=0.0)  # validation (docs/audio.md); set p to use it


class AudioTraditionalParams(_Strict):
    ops: AudioOpsParams = AudioOpsParams()


class AudioQualityParams(_Strict):
    snr_min: float | None = Field(
        default=0.0, ge=-50, le=100,
        description="traditional branch: the least SNR (dB) of a clip against its source carried through the same "
                    "shift, gain, speed and pitch (what is left is the noise and any clipping); null = check off; "
                    "its mode: quality.modes.snr")


class AudioParams(_Strict):
    ingest: AudioIngestParams = AudioIngestParams()
    features: FeatureParams = FeatureParams()
    traditional: AudioTraditionalParams = AudioTraditionalParams()
    quality: AudioQualityParams = AudioQualityParams()
