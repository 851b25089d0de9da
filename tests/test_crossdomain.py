"""The crossdomain branch as a stage: translations with lineage and their cycle reconstructions, replay, the gate's
scores on them, the target folder's checks, evaluate's target-domain accuracy, and the params that guard it."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from augdag import cyclegan, imquality
from augdag.errors import DataError, ParamsError
from augdag.layout import cycle_dir
from augdag.params import deep_merge, parse_params
from augdag.storage import StageData, content_hash, read_manifest
from augdag.tasks import crossdomain, replay, run_stage
from helpers import SMALL, crossdomain_overrides, image_folder, torch_threads

STAGES = ["ingest", "strategy", "traditional", "mix", "generative", "crossdomain", "quality", "merge", "finetune",
          "evaluate"]


fixed_threads = torch_threads(2)


def _over(base: Path) -> dict:
    src = image_folder(base / "src")
    xd = crossdomain_overrides(base, classes=("circle", "bar"))
    return deep_merge(SMALL, deep_merge(xd, {
        "ingest": {"source": str(src), "image_size": 16, "n_per_class": 3, "n_val_per_class": 1,
                   "n_test_per_class": 2},
        "strategy": {"mix": {"enabled": False}, "generative": {"enabled": False}},
        "finetune": {"pretrained": False, "steps": 2, "eval_every": 1, "image_size": 16,
                     "online_mix": {"enabled": False}},
        "evaluate": {"robustness": {"enabled": False}}}))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    base = tmp_path_factory.mktemp("xd")
    over = _over(base)
    root = base / "proj"
    for s in STAGES:
        run_stage(s, parse_params(over), root)
    return root, over


def test_every_raw_train_image_is_translated_with_its_label_parent_checkpoint_and_reconstruction(project):
    root, _ = project
    raw = read_manifest(root / "data" / "ingest")
    train = raw[raw.split == "train"]
    m = read_manifest(root / "data" / "crossdomain")
    assert list(m.parent_ids.map(lambda ps: list(ps))) == [[s] for s in train.sample_id]
    assert list(m.label) == list(train.label) and set(m.branch) == {"crossdomain"}
    digest = cyclegan.file_hash(root / "data" / "crossdomain" / crossdomain.CHECKPOINT)
    assert set(m.generator_hash) == {digest}
    summary = json.loads((root / "data" / "crossdomain" / "summary.json").read_text())
    assert summary["generator_hash"] == digest and summary["samples"] == len(train) == 9
    assert summary["target_images"] == 12 and len(summary["target_digest"]) == 64
    cyc = read_manifest(cycle_dir(root))  # one reconstruction per sample, at the sample's shard and index
    assert list(cyc.sample_id) == list(m.sample_id) and list(cyc[["shard", "index"]].itertuples(index=False)) == \
        list(m[["shard", "index"]].itertuples(index=False))
    model = cyclegan.load_cyclegan(root / "data" / "crossdomain" / crossdomain.CHECKPOINT)
    parents = StageData(root / "data" / "ingest").images(train)
    fake, rec = model.translate(parents)
    assert [content_hash(f) for f in fake] == list(m.content_hash)
    assert [content_hash(r) for r in rec] == list(cyc.content_hash)
    assert not np.array_equal(fake, parents)  # a translation, not a copy


def test_a_translation_replays_from_its_checkpoint_and_a_changed_checkpoint_is_refused(project, tmp_path):
    import shutil

    root, over = project
    sid = read_manifest(root / "data" / "crossdomain").sample_id.iloc[4]
    out = replay(root, sid, parse_params(over))
    assert out["stage"] == "crossdomain" and out["match"] and out["reconstruction_match"]
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    ckpt = copy / "data" / "crossdomain" / crossdomain.CHECKPOINT
    blob = bytearray(ckpt.read_bytes())
    blob[-1] ^= 1
    ckpt.write_bytes(bytes(blob))
    with pytest.raises(Exception, match="checkpoint hash differs"):
        replay(copy, sid)


def test_the_gate_scores_a_translation_by_its_cycle_reconstruction(project):
    root, _ = project
    q = pd.concat([read_manifest(root / "data" / "quality", name) for name in ("manifest.parquet", "rejected.parquet")])
    q = q[q.branch == "crossdomain"].set_index("sample_id")
    m = read_manifest(root / "data" / "crossdomain")
    raw = StageData(root / "data" / "ingest")
    parents = np.stack([raw.image(raw.manifest.set_index("sample_id").loc[ps[0]].to_dict() | {"sample_id": ps[0]})
                        for ps in m.parent_ids])
    recs = StageData(cycle_dir(root), manifest=False).images(m)
    scores = [json.loads(q.loc[s, "scores"]) for s in m.sample_id]
    assert np.allclose([s["psnr"] for s in scores], imquality.psnr_batch(recs, parents), atol=1e-5)
    assert np.allclose([s["ssim"] for s in scores], imquality.ssim_batch(recs, parents), atol=1e-5)
    fakes = StageData(root / "data" / "crossdomain", manifest=False).images(m)
    # not the translation's distance to its source, which differs from it by design
    assert not np.allclose([s["psnr"] for s in scores], imquality.psnr_batch(fakes, parents), atol=1e-3)
    assert all(0.0 <= s["label_prob"] <= 1.0 for s in scores)
    summary = json.loads((root / "data" / "quality" / "summary.json").read_text())
    assert summary["crossdomain"]["in"] == len(m)


def test_evaluate_scores_the_target_domain_test_folder(project):
    root, _ = project
    metrics = json.loads((root / "data" / "evaluate" / "metrics.json").read_text())
    target = metrics["target"]
    assert target["n_test"] == 6 and 0.0 <= target["accuracy"] <= 1.0
    rows = (root / "data" / "evaluate" / "target_predictions.csv").read_text().splitlines()
    assert rows[0] == "file,actual,predicted" and len(rows) == 7
    acc = np.mean([r.split(",")[1] == r.split(",")[2] for r in rows[1:]])
    assert target["accuracy"] == pytest.approx(acc)
    summary = json.loads((root / "data" / "evaluate" / "summary.json").read_text())
    assert summary["target_accuracy"] == target["accuracy"]


def test_a_target_test_folder_with_a_foreign_class_names_the_key(project, tmp_path):
    root, over = project
    bad = tmp_path / "bad"
    (bad / "triangle").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(bad / "triangle" / "x.png")
    with pytest.raises(DataError, match=r"evaluate.target_test = .*\['triangle'\] are not classes"):
        run_stage("evaluate", parse_params(deep_merge(over, {"evaluate": {"target_test": str(bad)}})), root)


def test_the_stage_is_deterministic(project, tmp_path):
    root, over = project
    again = tmp_path / "again"
    for s in ("ingest", "strategy", "crossdomain"):
        run_stage(s, parse_params(over), again)
    for name in ("manifest.parquet", crossdomain.CHECKPOINT, "summary.json"):
        a = (root / "data" / "crossdomain" / name).read_bytes()
        b = (again / "data" / "crossdomain" / name).read_bytes()
        assert a == b, name


def test_off_by_default_it_writes_an_empty_branch(tmp_path):
    over = deep_merge(_over(tmp_path), {"strategy": {"crossdomain": {"enabled": False}}})
    root = tmp_path / "proj"
    for s in ("ingest", "strategy", "crossdomain"):
        run_stage(s, parse_params(over), root)
    assert len(read_manifest(root / "data" / "crossdomain")) == 0
    assert json.loads((root / "data" / "crossdomain" / "summary.json").read_text()) == {"enabled": False,
                                                                                       "samples": 0}
    assert not (root / "data" / "crossdomain" / crossdomain.CHECKPOINT).exists()


def test_params_guard_the_branch():
    with pytest.raises(ParamsError, match="needs crossdomain.target"):
        parse_params({"strategy": {"crossdomain": {"enabled": True}}})
    with pytest.raises(ParamsError, match="one per source image"):
        parse_params({"strategy": {"crossdomain": {"enabled": True, "multiplier": 2}}, "crossdomain": {"target": "t"}})
    with pytest.raises(ParamsError, match="not available with modality: text"):
        parse_params({"modality": "text", "strategy": {"crossdomain": {"enabled": True}},
                      "crossdomain": {"target": "t"}})
    with pytest.raises(ParamsError, match=r"crossdomain.model.steps"):
        parse_params({"crossdomain": {"model": {"steps": 0}}})
    assert parse_params({}).strategy.crossdomain.enabled is False


def test_target_folder_problems_name_the_folder_or_file(tmp_path):
    over = _over(tmp_path)
    root = tmp_path / "proj"
    for s in ("ingest", "strategy"):
        run_stage(s, parse_params(over), root)

    def run_with(target) -> None:
        run_stage("crossdomain", parse_params(deep_merge(over, {"crossdomain": {"target": str(target)}})), root)

    with pytest.raises(DataError, match="crossdomain.target folder not found"):
        run_with(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        run_with(tmp_path / "empty")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "x.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError, match=r"x\.png: .*(corrupt|not a PNG)"):
        run_with(corrupt)
    linked = tmp_path / "linked"
    linked.mkdir()
    os.symlink(tmp_path / "target-unlabelled" / "a" / "t01.png", linked / "t.png")
    with pytest.raises(DataError, match="link pointing outside"):
        run_with(linked)
    assert not (root / "data" / "crossdomain").exists()  # nothing half-written by the failed runs


def test_a_large_target_folder_is_cut_to_a_choice_that_depends_on_the_names_only(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(30):
        Image.fromarray(np.full((6, 6), i, np.uint8)).save(folder / f"{i:02d}.png")
    picked = crossdomain.target_files(str(folder), 10, seed=3)
    assert len(picked) == 10 and picked == sorted(picked)
    (folder / "99.png").write_bytes((folder / "00.png").read_bytes())  # one more file: the others' keys unchanged
    again = crossdomain.target_files(str(folder), 10, seed=3)
    assert len(set(picked) - set(again)) <= 1
    assert crossdomain.target_files(str(folder), 10, seed=4) != picked
    assert len(crossdomain.target_files(str(folder), 100, seed=3)) == 31
