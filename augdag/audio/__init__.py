"""The audio library (params `modality: audio`, docs/audio.md): params (params.py), the spoken-digits dataset
synthesised at setup (assets.py), reading clips (data.py), the log-Mel image a clip becomes (features.py), the
waveform and SpecAugment ops (ops.py), and clips stored beside their spectrograms (store.py)."""
