"""Audio on the same DAG (issue 32), end to end: a user's folder of clips through the Prefect flow (real server)
and `dvc repro` (the same bytes), GE, the SNR gate, the fine-tune on spectrograms, replay and the report's clips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from test_pipeline import out_hashes, ran_stages

from augdag.errors import DataError
from augdag.params import parse_params
from augdag.storage import StageData, read_manifest
from helpers import make_project, run

pytestmark = pytest.mark.slow

STAGES = {"ingest", "strategy", "traditional", "mix", "generative", "crossdomain", "quality", "merge", "dialogue",
          "finetune", "evaluate", "report"}


def audio_folder(root: Path, per_class: int = 10) -> Path:
    """A user-style dataset: three classes of short sounds (a low hum, a high whistle, a rising sweep) with drawn
    pitch, length, loudness and noise; WAV and FLAC, 16 and 22.05 kHz, a stereo file among them."""
    g = np.random.default_rng(0)
    for cls in ("hum", "whistle", "sweep"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            sr = 22050 if i % 3 == 0 else 16000
            t = np.arange(int(g.uniform(0.3, 0.7) * sr)) / sr
            f0 = {"hum": 200, "whistle": 2000, "sweep": 400}[cls] * g.uniform(0.9, 1.1)
            phase = 2 * np.pi * (f0 * t + (1500 * t * t / 2 if cls == "sweep" else 0))
            x = g.uniform(0.2, 0.6) * np.sin(phase) + 0.01 * g.standard_normal(len(t))
            if i == 1:
                x = np.stack([x, 0.5 * x], axis=1)
            ext = "flac" if i % 2 else "wav"
            sf.write(root / cls / f"{cls}{i:02d}.{ext}", x, sr)
    return root


def audio_params(folder: Path) -> dict:
    return {
        "modality": "audio",
        "strategy": {"traditional": {"enabled": True, "multiplier": 2}, "mix": {"enabled": True, "multiplier": 1},
                     "generative": {"enabled": False, "multiplier": 1}},
        "quality": {"modes": {"snr": "filter"}},
        "finetune": {"steps": 3, "batch_size": 8, "eval_every": 3},
        "evaluate": {"robustness": {"enabled": False}},
        "report": {"grid_samples": 4},
        "audio": {
            "ingest": {"source": str(folder), "n_per_class": 4, "n_val_per_class": 2, "n_test_per_class": 4},
            "traditional": {"ops": {"noise": {"p": 1.0, "snr_db": [0.0, 20.0]}, "time_warp": {"p": 0.5},
                                    "freq_mask": {"p": 0.5}, "time_mask": {"p": 0.5}}},
            "quality": {"snr_min": 8.0},
        },
    }


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return audio_folder(tmp_path_factory.mktemp("clips") / "clips")


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def flow_audio(tmp_path_factory, prefect_server, folder):
    from augdag.flows.pipeline import run_pipeline

    proj = make_project(tmp_path_factory.mktemp("audio-flow"), audio_params(folder))
    results = run_pipeline(str(proj), workers=2)
    assert set(results) == STAGES and not any(r.get("skipped") for r in results.values())
    return proj


@pytest.fixture(scope="module")
def dvc_audio(tmp_path_factory, folder):
    proj = make_project(tmp_path_factory.mktemp("audio-dvc"), audio_params(folder))
    res = run(["dvc", "repro"], proj)
    assert ran_stages(res.stdout) == STAGES
    return proj


def test_flow_and_dvc_repro_give_the_same_bytes(flow_audio, dvc_audio):
    a, b = out_hashes(flow_audio), out_hashes(dvc_audio)
    assert {"ingest/waves/shard-00000.npy", "traditional/waves/shard-00000.npy", "finetune/model.safetensors",
            "report/report.html"} <= set(a)
    assert a == b
    assert json.loads(run(["dvc", "status", "--json"], flow_audio).stdout) == {}


def test_ingest_holds_spectrograms_and_their_clips(flow_audio):
    folder = flow_audio / "data" / "ingest"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["modality"] == "audio" and summary["classes"] == 3 and summary["train"] == 12
    m = read_manifest(folder)
    assert set(m.height) == set(m.width) == {64} and set(m.channels) == {1}
    clips = np.load(folder / "waves" / "shard-00000.npy")
    assert clips.dtype == np.int16 and clips.shape == (len(m), 16128)
    from augdag.audio import features
    from augdag.audio.data import to_float

    data, feats = StageData(folder), parse_params({}).audio.features
    for r in m.head(5).to_dict("records"):  # each image is its clip's log-Mel
        assert np.array_equal(data.image(r), features.log_mel(to_float(clips[r["index"]]), feats))
    assert sorted(json.loads((folder / "classes.json").read_text())["classes"]) == ["hum", "sweep", "whistle"]


def test_the_gate_filters_on_snr_and_records_it(flow_audio):
    q = flow_audio / "data" / "quality"
    kept, rejected = read_manifest(q), read_manifest(q, "rejected.parquet")
    trad_kept = kept[kept.branch == "traditional"]
    trad_rej = rejected[rejected.branch == "traditional"]
    assert len(trad_rej) and len(trad_kept)  # noise drawn in [0, 20] dB against a threshold of 8
    for frame, ok in ((trad_kept, True), (trad_rej, False)):
        snr = np.array([json.loads(s)["snr"] for s in frame.scores])
        assert ((snr >= 8.0) == ok).all() if ok else (snr < 8.0).all()
    assert all("snr" in r.split("; ") for r in trad_rej.gate_reason)
    mix = kept[kept.branch == "mix"]
    assert len(mix) and all("snr" not in json.loads(s) for s in mix.scores)  # a mix has no clip of its own
    summary = json.loads((q / "summary.json").read_text())
    assert summary["traditional"]["checks"]["snr"]["mode"] == "filter"
    assert summary["traditional"]["checks"]["psnr"]["mode"] == "off"  # a time shift moves every frame


def test_replay_matches_for_every_branch_and_notices_tampering(flow_audio, tmp_path):
    from augdag.params import load_params
    from augdag.tasks import replay

    q = read_manifest(flow_audio / "data" / "quality")
    params = load_params(flow_audio / "params.yaml")
    for branch in ("traditional", "mix"):
        sid = q[q.branch == branch].sample_id.iloc[0]
        res = replay(flow_audio, sid, params)
        assert res["match"], res
        if branch == "traditional":
            assert res["params_redrawn_match"] is True
    raw_id = read_manifest(flow_audio / "data" / "ingest").sample_id.iloc[0]
    assert replay(flow_audio, raw_id)["match"]
    # a raw clip changed on disk: the traditional variants replayed from it no longer match
    trad = read_manifest(flow_audio / "data" / "traditional").iloc[0]
    waves = flow_audio / "data" / "ingest" / "waves" / "shard-00000.npy"
    saved = waves.read_bytes()
    try:
        clips = np.load(waves)
        raw = read_manifest(flow_audio / "data" / "ingest").set_index("sample_id")
        clips[int(raw.loc[trad.parent_ids[0], "index"])] //= 2
        np.save(waves, clips)
        assert not replay(flow_audio, trad.sample_id)["match"]
    finally:
        waves.write_bytes(saved)


def test_the_report_embeds_playable_clips_and_allows_them(flow_audio):
    html = (flow_audio / "data" / "report" / "report.html").read_text()
    assert "media-src data:" in html
    assert html.count("<audio controls") >= 4 and "data:audio/wav;base64," in html
    assert "id='audio-traditional'" in html and "id='audio-mix'" in html
    assert "noise (snr_db" in html  # the ops of a variant are listed
    assert "op mixup" in html or "op cutmix" in html  # and a mix's kind


def test_evaluate_and_finetune_ran_on_spectrograms(flow_audio):
    metrics = json.loads((flow_audio / "data" / "evaluate" / "metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0
    preds = pd.read_csv(flow_audio / "data" / "evaluate" / "predictions.csv")
    assert len(preds) == 12


def test_a_bad_file_in_the_folder_is_named_or_left_out(tmp_path):
    from augdag.tasks.ingest.audio import run as ingest

    folder = audio_folder(tmp_path / "clips", per_class=8)
    (folder / "hum" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (folder / "hum" / "notes.txt").write_text("not a clip")
    params = audio_params(folder)["audio"]["ingest"] | {"n_per_class": 2}
    p = parse_params({"modality": "audio", "audio": {"ingest": params}})
    with pytest.raises(DataError) as err:
        ingest(p, tmp_path / "proj")
    assert "broken.wav" in str(err.value) and "notes.txt" in str(err.value) and "Nothing was written" in str(err.value)
    assert not (tmp_path / "proj" / "data" / "ingest").exists()
    p = parse_params({"modality": "audio", "audio": {"ingest": params | {"on_bad_file": "skip"}}})
    summary = ingest(p, tmp_path / "proj")
    assert summary["rejected"] == 2
    rejected = pd.read_csv(tmp_path / "proj" / "data" / "ingest" / "rejected.csv")
    assert {Path(x).name for x in rejected.path} == {"broken.wav", "notes.txt"}
