"""The Python API: a project's stage outputs as a torch Dataset and a weighted sampler, lineage and replay."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import augdag
from augdag.api import dotted
from augdag.errors import AugdagError
from augdag.storage import StageWriter, write_json
from helpers import REPO, SMALL, make_project

CLASSES = ["a", "b", "c"]


def _project(tmp_path, n=9, text=False):
    """A project folder with an ingest class list and a merge-like stage: hard and soft labels, weights, splits."""
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    write_json(tmp_path / "data" / "ingest" / "classes.json", {"classes": CLASSES})
    w = StageWriter(tmp_path / "data" / "merge", shard_size=4)
    images = []
    for i in range(n):
        img = (np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3) + 7 * i).astype(np.uint8)
        images.append(img)
        soft = [0.25, 0.0, 0.75] if i % 3 == 2 else None
        w.add(img, sample_id=f"s{i}~mix0" if soft else f"s{i}", split="val" if i == n - 1 else "train",
              branch="mix" if soft else "raw", label=i % 3, soft_label=soft, parent_ids=[], source=f"f{i}",
              weight=0.0 if i == 0 else float(i))
    w.close()
    return images


def test_importing_augdag_starts_nothing_and_loads_no_torch():
    code = ("import sys, augdag; p = augdag.open_project(sys.argv[1]); m = p.stage('merge'); "
            "print('torch' in sys.modules, 'prefect' in sys.modules, type(m).__name__)")
    out = subprocess.run([sys.executable, "-c", code, str(REPO)], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "False", "StageOutput"]


def test_the_dataset_yields_images_labels_weights_and_ids(tmp_path):
    images = _project(tmp_path)
    stage = augdag.open_project(tmp_path).stage("merge")
    assert list(stage.manifest.sample_id[:3]) == ["s0", "s1", "s2~mix0"]
    ds = stage.dataset()
    assert len(ds) == 9 and ds.labels == "soft"  # a soft label in the set: every label a vector
    img, label, weight, sid = ds[1]
    assert img.dtype == torch.uint8 and tuple(img.shape) == (3, 5, 6)
    assert torch.equal(img, torch.from_numpy(images[1]).permute(2, 0, 1))
    assert torch.equal(label, torch.tensor([0.0, 1.0, 0.0])) and weight == 1.0 and sid == "s1"
    assert torch.allclose(ds[2][1], torch.tensor([0.25, 0.0, 0.75]))
    index = stage.dataset(labels="index")
    assert [index[i][1] for i in range(4)] == [0, 1, 2, 0]  # the mixed sample under its largest class
    assert ds[-1][3] == "s8~mix0"
    with pytest.raises(IndexError):
        ds[9]


def test_a_split_a_transform_and_worker_processes_give_the_same_items(tmp_path):
    from torchvision.transforms import v2

    images = _project(tmp_path)
    stage = augdag.open_project(tmp_path).stage("merge")
    val = stage.dataset(split="val")
    assert len(val) == 1 and val[0][3] == "s8~mix0"
    with pytest.raises(AugdagError, match="no 'test' rows; its splits: \\['train', 'val'\\]"):
        stage.dataset(split="test")
    flipped = stage.dataset(transform=v2.RandomHorizontalFlip(p=1.0))
    assert torch.equal(flipped[4][0], torch.from_numpy(images[4][:, ::-1].copy()).permute(2, 0, 1))

    def batches(workers):
        loader = torch.utils.data.DataLoader(stage.dataset(), batch_size=4, num_workers=workers)
        return [(b[0].clone(), b[1].clone(), b[2].clone(), list(b[3])) for b in loader]

    one, two = batches(0), batches(2)
    assert len(one) == 3
    for a, b in zip(one, two):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2]) and a[3] == b[3]


def test_the_sampler_draws_by_the_merge_weights(tmp_path):
    _project(tmp_path)
    stage = augdag.open_project(tmp_path).stage("merge")
    assert stage.weights().tolist() == [0.0, 1, 2, 3, 4, 5, 6, 7, 8]
    drawn = list(stage.sampler(num_samples=20_000, generator=torch.Generator().manual_seed(0)))
    counts = np.bincount(drawn, minlength=9)
    assert counts[0] == 0  # weight 0: never drawn
    assert abs(counts[8] / counts[1] - 8) < 1.0  # in proportion to the weights
    train = stage.sampler(split="train")
    assert len(train) == 8 and max(train) < 8  # positions in dataset(split="train")


def test_bad_requests_say_what_is_wrong(tmp_path):
    with pytest.raises(AugdagError, match="not an augdag project"):
        augdag.open_project(tmp_path)
    _project(tmp_path)
    project = augdag.open_project(tmp_path)
    with pytest.raises(AugdagError, match="unknown stage 'merged'; stages are: ingest, strategy"):
        project.stage("merged")
    with pytest.raises(AugdagError, match="stage quality has no manifest; run the pipeline first"):
        project.stage("quality").dataset()
    with pytest.raises(AugdagError, match="labels must be auto, index or soft"):
        project.stage("merge").dataset(labels="onehot")


def test_a_text_stage_yields_its_texts(tmp_path):
    from augdag.storage import manifest_frame, row, text_hash, write_manifest

    (tmp_path / "params.yaml").write_text("seed: 0\n")
    write_json(tmp_path / "data" / "ingest" / "classes.json", {"classes": CLASSES})
    texts = ["a fine film", "dull", "so so"]
    rows = [row(sample_id=f"t{i}", split="train", branch="raw", label=i, parent_ids=[], source="x", op_params="{}",
                content_hash=text_hash(t), text=t) for i, t in enumerate(texts)]
    (tmp_path / "data" / "merge").mkdir()
    write_manifest(tmp_path / "data" / "merge" / "manifest.parquet", manifest_frame(rows))
    ds = augdag.open_project(tmp_path).stage("merge").dataset()
    assert [ds[i][0] for i in range(3)] == texts and ds[2][1] == 2 and ds.labels == "index"


def test_overrides_become_set_strings():
    assert dotted({"finetune": {"steps": 3, "online_mix": {"enabled": True}}, "seed": 1, "ingest.source": "x y"}) \
        == ["finetune.steps=3", "finetune.online_mix.enabled=true", "seed=1", 'ingest.source="x y"']


@pytest.mark.slow
def test_run_lineage_and_replay_through_the_api(tmp_path):
    """open_project(...).run(**overrides) runs the Prefect flow and writes the overrides into params.yaml, as
    `augdag run --set` does; the merged set then trains a few steps of a plain loop."""
    project = augdag.open_project(make_project(tmp_path / "p", SMALL))
    results = project.run(finetune={"steps": 2}, seed=3)
    assert set(results) >= {"ingest", "merge", "report"}
    assert project.params.finetune.steps == 2 and project.params.seed == 3
    merged = project.stage("merge")
    sid = next(s for s in merged.manifest.sample_id if "~trad" in s)
    assert [r["sample_id"] for r in project.lineage(sid)] == [sid, sid.split("~")[0]]
    assert project.replay(sid)["match"]
    assert json.loads((project.root / "data" / "evaluate" / "metrics.json").read_text())["accuracy"] >= 0
