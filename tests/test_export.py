"""augdag export: each format read back by its own reader (ImageFolder, datasets.load_from_disk, WebDataset) gives
the stage's pixels, labels, soft labels and weights; refusals; a failure midway leaves no export; the CLI."""

import csv
import json
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from augdag import export as ex
from augdag.errors import AugdagError, DataError
from augdag.storage import StageData, StageWriter, row, text_hash, write_json, write_manifest
from helpers import REPO, run

CLASSES = ["T-shirt/top", "cat", "CON", "Ankle boot"]
ODD_IDS = ["boot/a b.png", "A1", "a1", "con", "naïve.jpg", "x" * 150]


def _image(rng, h, w, c):
    return rng.integers(0, 256, (h, w, c), dtype=np.uint8)


def _write_stage(folder: Path, rows: list[tuple[np.ndarray, dict]], shard_size: int = 5) -> None:
    w = StageWriter(folder, shard_size=shard_size)
    for image, fields in rows:
        w.add(image, **fields)
    w.close(frame=False)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """data/ingest (gray, three splits, odd sample ids), data/merge (raw, traditional, mixed samples with soft
    labels, weights), data/traditional (RGB, two image sizes)."""
    root = tmp_path_factory.mktemp("proj")
    (root / "params.yaml").write_text("seed: 0\n")
    rng = np.random.default_rng(0)
    raw = []
    for i in range(18):
        sid = ODD_IDS[i] if i < len(ODD_IDS) else f"fmnist-{i:03d}"
        raw.append((_image(rng, 8, 8, 1), dict(sample_id=sid, split=("train", "val", "test")[i % 3], branch="raw",
                                                label=i % len(CLASSES), parent_ids=[], source=f"src#{i}",
                                                op_params="{}")))
    _write_stage(root / "data" / "ingest", raw)
    write_json(root / "data" / "ingest" / "classes.json", {"classes": CLASSES})
    train = [(img, f) for img, f in raw if f["split"] == "train"]
    merged = [(img, {**f, "weight": 0.1}) for img, f in train]
    for k, (img, f) in enumerate(train):
        merged.append((_image(rng, 8, 8, 1), {**f, "sample_id": f"{f['sample_id']}~trad0", "branch": "traditional",
                                              "parent_ids": [f["sample_id"]], "weight": 0.05 + k / 100,
                                              "op_params": '{"ops": []}'}))
    softs = [[0.3, 0.7, 0.0, 0.0], [0.0, 0.0, 0.2, 0.8], [0.5, 0.5, 0.0, 0.0]]
    for k, soft in enumerate(softs):
        a, b = train[k][1], train[k + 1][1]
        merged.append((_image(rng, 8, 8, 1), dict(sample_id=f"{a['sample_id']}~mix0", split="train", branch="mix",
                                                  label=int(np.argmax(soft)), soft_label=soft, weight=0.02,
                                                  parent_ids=[a["sample_id"], b["sample_id"]], source=a["source"],
                                                  op_params='{"op": "mixup"}')))
    _write_stage(root / "data" / "merge", merged)
    rgb = [(_image(rng, 6 + (i % 2) * 3, 7, 3), dict(sample_id=f"rgb-{i}~trad0", split="train", branch="traditional",
                                                     label=i % 4, parent_ids=[f"rgb-{i}"], source="x"))
           for i in range(7)]
    _write_stage(root / "data" / "traditional", rgb)
    return root


def _truth(root: Path, stage: str) -> dict:
    """sample_id -> (image, exported label, soft label, weight) from the stage itself."""
    data = StageData(root / "data" / stage)
    out = {}
    for _, r in data.manifest.iterrows():
        soft = r["soft_label"]
        soft = [] if soft is None else list(np.asarray(soft, np.float32))
        label = int(np.argmax(soft)) if soft else int(r["label"])
        w = r["weight"]
        out[r["sample_id"]] = (data.image(r), label, soft, 1.0 if w != w else float(w), r["split"])
    return out


def _read_imagefolder(out: Path) -> dict:
    from torchvision.datasets import ImageFolder

    marker = json.loads((out / ex.MARKER).read_text())
    with open(out / "samples.csv", newline="", encoding="utf-8") as f:
        listed = {r["file"]: r for r in csv.DictReader(f)}
    got = {}
    for split in marker["splits"]:
        ds = ImageFolder(out / split, loader=lambda p: Image.open(p).copy())
        for (path, idx), (image, _) in zip(ds.samples, ds):
            r = listed[Path(path).relative_to(out).as_posix()]
            folder = ds.classes[idx]
            label = marker["class_folders"].index(folder)  # ImageFolder numbers folders in sorted order
            assert marker["classes"][label] == r["class"] and int(r["label"]) == label and r["split"] == split
            assert image.mode == {1: "L", 3: "RGB"}[len(image.getbands())]
            a = np.asarray(image)
            got[r["sample_id"]] = (a if a.ndim == 3 else a[:, :, None], label, json.loads(r["soft_label"]),
                                   float(r["weight"]), split)
    assert len(got) == len(listed) == marker["count"]
    return got


def _read_hf(out: Path) -> dict:
    import datasets

    dd = datasets.load_from_disk(str(out))
    got = {}
    for split, ds in dd.items():
        assert ds.features["label"].names == CLASSES
        for r in ds:
            a = np.asarray(r["image"])
            got[r["sample_id"]] = (a if a.ndim == 3 else a[:, :, None], r["label"], r["soft_label"], r["weight"],
                                   split)
    return got


def _read_webdataset(out: Path) -> dict:
    import webdataset as wds

    channels = json.loads((out / ex.MARKER).read_text())["channels"]
    got = {}
    for tar in sorted(out.glob("*.tar")):
        spec = {(1,): "l8", (3,): "rgb8"}[tuple(channels)]
        for s in wds.WebDataset(str(tar), shardshuffle=False, empty_check=False).decode(spec):
            meta = s["json"]
            assert s["cls"] == meta["label"]
            a = s["png"]
            got[meta["sample_id"]] = (a if a.ndim == 3 else a[:, :, None], s["cls"], meta["soft_label"],
                                      meta["weight"], meta["split"])
            assert urllib.parse.unquote(s["__key__"]) == meta["sample_id"] or "~~" in s["__key__"]
    return got


READERS = {"imagefolder": _read_imagefolder, "hf": _read_hf, "webdataset": _read_webdataset}


@pytest.mark.parametrize("fmt", ex.IMAGE_FORMATS)
@pytest.mark.parametrize("stage", ["merge", "ingest", "traditional"])
def test_round_trip(project, tmp_path, fmt, stage):
    out = tmp_path / "out"
    summary = ex.export(project, stage, fmt, out, maxcount=4)
    truth = _truth(project, stage)
    assert summary["count"] == len(truth) and summary["out"] == str(out) and summary["format"] == fmt
    assert summary["bytes"] == sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) > 0
    got = READERS[fmt](out)
    assert set(got) == set(truth)
    for sid, (image, label, soft, weight, split) in truth.items():
        g = got[sid]
        assert g[0].dtype == np.uint8 and np.array_equal(g[0], image), sid
        assert g[1] == label and g[3] == pytest.approx(weight) and g[4] == split, sid
        assert np.array_equal(np.asarray(g[2], np.float32), np.asarray(soft, np.float32)), sid
    if stage == "merge":  # a mixed sample lands in its soft label's largest class; a hard one has no soft label
        assert got["con~mix0"][1] == 3 and got["fmnist-006"][2] == []
        assert got["fmnist-006~mix0"][1] == 0  # a tie (0.5, 0.5): the first of the largest, as numpy's argmax
    assert list(project.parent.glob(".out.tmp-*")) == [] and list(tmp_path.glob(".out.*")) == []


def test_imagefolder_names(project, tmp_path):
    """File and folder names are safe everywhere; unquote gives the id back, or samples.csv lists it."""
    out = tmp_path / "if"
    ex.export(project, "ingest", "imagefolder", out)
    rows = list(csv.DictReader(open(out / "samples.csv", newline="", encoding="utf-8")))
    stems = [Path(r["file"]).stem for r in rows]
    assert len({s.casefold() for s in stems}) == len(rows)  # A1 and a1 do not clash on macOS / Windows
    for r, stem in zip(rows, stems):
        assert all(ch.isascii() and (ch.isalnum() or ch in "_-~%") for ch in stem) and len(stem) <= ex.KEY_MAX
        assert stem.upper() not in ("CON", "NUL", "PRN", "AUX")
        assert urllib.parse.unquote(stem) == r["sample_id"] or "~~" in stem
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(["T-shirt%2Ftop", "cat", "%43ON",
                                                                        "Ankle boot"])
    assert "boot%2Fa%20b%2Epng" in stems and "na%C3%AFve%2Ejpg" in stems


def test_safe_names():
    for sid in ["fmnist-train-16233~mix0", "boot/a b.png~trad0", "100% ü.JPG", "..", "a.b.c", "nul", "LPT1", ""]:
        key = ex.safe_key(sid)
        assert urllib.parse.unquote(key) == sid and "." not in key and "/" not in key
    assert ex.safe_key("fmnist-train-16233~mix0") == "fmnist-train-16233~mix0"
    assert ex.safe_folder("T-shirt/top") == "T-shirt%2Ftop" and ex.safe_folder("Ankle boot") == "Ankle boot"
    for name in ["a.", " a", ".hidden", "com1.x", "50%", 'a<b>:"|?*\\']:
        f = ex.safe_folder(name)
        assert urllib.parse.unquote(f) == name and f[-1] not in ". " and f[0] not in ". "
    names = ex._Names()
    got = [names(ex.safe_key(s), s) for s in ["Ab", "aB", "ab", "y" * 200, "y" * 201]]
    assert len({g.casefold() for g in got}) == 5 and got[0] == "Ab" and all(len(g) <= ex.KEY_MAX for g in got)


def test_webdataset_bytes_are_reproducible(project, tmp_path):
    a = ex.export(project, "merge", "webdataset", tmp_path / "a", maxcount=4)
    b = ex.export(project, "merge", "webdataset", tmp_path / "b", maxcount=4)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir()) and a["bytes"] == b["bytes"]
    assert len([f for f in files if f.startswith("train-")]) == 4  # 15 samples, 4 per shard
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    import tarfile

    with tarfile.open(tmp_path / "a" / "train-000000.tar") as t:
        m = t.getmembers()
        assert {(x.mtime, x.uid, x.gid, x.uname, x.gname, x.mode) for x in m} == {(0, 0, 0, "", "", 0o644)}
        key = "boot%2Fa%20b%2Epng"
        assert [x.name for x in m[:3]] == [f"{key}.cls", f"{key}.json", f"{key}.png"]


def test_refusals(project, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(AugdagError, match="not empty.*--overwrite"):
        ex.export(project, "merge", "hf", out)
    with pytest.raises(AugdagError, match="no earlier export"):
        ex.export(project, "merge", "hf", out, overwrite=True)
    assert (out / "mine.txt").read_text() == "keep me"
    prev = tmp_path / "prev"
    ex.export(project, "merge", "imagefolder", prev)
    with pytest.raises(AugdagError, match="not empty"):
        ex.export(project, "merge", "hf", prev)
    assert ex.export(project, "merge", "hf", prev, overwrite=True)["format"] == "hf"
    assert json.loads((prev / ex.MARKER).read_text())["format"] == "hf" and not (prev / "samples.csv").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    ex.export(project, "merge", "webdataset", empty)  # an empty folder is fine without --overwrite
    for bad, match in [(dict(stage="nope"), "unknown stage 'nope'.*ingest, traditional, mix, generative,"
                                                               " crossdomain, merge"),
                       (dict(stage="quality"), "no samples of its own"),
                       (dict(stage="mix"), "has no output yet"),
                       (dict(fmt="parquet"), "unknown format 'parquet'.*imagefolder, hf, webdataset"),
                       (dict(fmt="csv"), "holds images.*imagefolder, hf, webdataset"),
                       (dict(out=project / "data" / "x"), "data folder"),
                       (dict(out=project, overwrite=True), "data folder"),
                       (dict(maxcount=0), "maxcount")]:
        args = {"stage": "merge", "fmt": "hf", "out": tmp_path / "never", **bad}
        with pytest.raises(AugdagError, match=match):
            ex.export(project, args.pop("stage"), args.pop("fmt"), args.pop("out"), **args)
    assert not (tmp_path / "never").exists() and not (project / "data" / "x").exists()


@pytest.mark.parametrize("fmt", ex.IMAGE_FORMATS)
def test_failure_midway_leaves_no_export(project, tmp_path, monkeypatch, fmt):
    real, calls = ex._png, []

    def flaky(image):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("disk on fire")
        return real(image)

    monkeypatch.setattr(ex, "_png", flaky)
    with pytest.raises(RuntimeError, match="disk on fire"):
        ex.export(project, "merge", fmt, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # neither the export nor its temporary folder
    monkeypatch.setattr(ex, "_png", real)
    ex.export(project, "ingest", fmt, tmp_path / "out")
    before = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    calls.clear()
    monkeypatch.setattr(ex, "_png", flaky)
    with pytest.raises(RuntimeError):
        ex.export(project, "merge", fmt, tmp_path / "out", overwrite=True)
    assert {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()} == before  # the last one stays
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_corrupt_shard_is_caught(project, tmp_path):
    import shutil

    root = tmp_path / "proj"
    shutil.copytree(project, root)
    shard = sorted((root / "data" / "merge" / "shards").glob("*.npy"))[1]
    a = np.load(shard)
    a[0, 0, 0, 0] ^= 1
    np.save(shard, a)
    with pytest.raises(DataError, match="does not match its content hash"):
        ex.export(root, "merge", "webdataset", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def text_project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("textproj")
    texts = ["a fine film", "dull, \"long\"\nand slow", "ünïcode ok", "great fun", "meh", "so bad"]
    rows = [row(sample_id=f"txt-{i:04x}", split=("train", "test")[i % 2], branch="raw", label=i % 2, parent_ids=[],
                source=f"reviews.csv#{i}", op_params="{}", text=t, content_hash=text_hash(t))
            for i, t in enumerate(texts)]
    (root / "data" / "ingest").mkdir(parents=True)
    write_manifest(root / "data" / "ingest" / "manifest.parquet", rows)
    write_json(root / "data" / "ingest" / "classes.json", {"classes": ["fresh", "rotten"]})
    merged = [{**r, "weight": 0.25} for r in rows if r["split"] == "train"]
    merged.append(row(sample_id="txt-0000~mix0", split="train", branch="mix", label=1, soft_label=[0.4, 0.6],
                      parent_ids=["txt-0000", "txt-0002"], source="reviews.csv#0", op_params="{}", weight=0.25,
                      content_hash=text_hash("pair")))
    (root / "data" / "merge").mkdir()
    write_manifest(root / "data" / "merge" / "manifest.parquet", merged)
    return root


def test_text_formats(text_project, tmp_path):
    import datasets

    with pytest.raises(AugdagError, match="holds texts.*csv, jsonl, hf"):
        ex.export(text_project, "merge", "imagefolder", tmp_path / "x")
    with pytest.raises(AugdagError, match="holds texts.*csv, jsonl, hf"):
        ex.export(text_project, "ingest", "webdataset", tmp_path / "x")
    truth = StageData(text_project / "data" / "ingest").manifest.set_index("sample_id")
    ex.export(text_project, "ingest", "csv", tmp_path / "csv")
    got = {}
    for split in ("train", "test"):
        with open(tmp_path / "csv" / f"{split}.csv", newline="", encoding="utf-8") as f:
            got.update({r["sample_id"]: r for r in csv.DictReader(f)})
    assert set(got) == set(truth.index)
    for sid, r in got.items():
        assert r["text"] == truth.loc[sid, "text"] and int(r["label"]) == truth.loc[sid, "label"]
        assert r["class"] == ["fresh", "rotten"][int(r["label"])] and r["split"] == truth.loc[sid, "split"]
    ex.export(text_project, "merge", "jsonl", tmp_path / "jsonl")
    lines = [json.loads(x) for x in (tmp_path / "jsonl" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    by = {r["sample_id"]: r for r in lines}
    assert by["txt-0000~mix0"]["text"] is None and by["txt-0000~mix0"]["label"] == 1
    assert by["txt-0000~mix0"]["soft_label"] == [0.4, 0.6] and by["txt-0000"]["soft_label"] == []
    assert by["txt-0002"]["text"] == "ünïcode ok" and by["txt-0002"]["weight"] == 0.25
    ex.export(text_project, "merge", "hf", tmp_path / "hf")
    ds = datasets.load_from_disk(str(tmp_path / "hf"))["train"]
    assert ds.features["label"].names == ["fresh", "rotten"] and "image" not in ds.features
    assert {r["sample_id"]: r["text"] for r in ds} == {k: v["text"] for k, v in by.items()}
    assert [r["soft_label"] for r in ds if r["branch"] == "mix"] == [pytest.approx([0.4, 0.6])]


def test_cli(project, tmp_path):
    augdag = str(REPO / ".venv" / "bin" / "augdag")
    res = run([augdag, "-C", str(project), "export", "merge", "--format", "imagefolder", "--out", "exp"], tmp_path)
    assert json.loads(res.stdout)["count"] == 15 and (tmp_path / "exp" / "samples.csv").is_file()
    for args, match in [(["--format", "imagefolder", "--out", "exp"], "not empty"),
                        (["--format", "tiff", "--out", "x"], "unknown format 'tiff'"),
                        (["--stage-typo"], "")]:
        cmd = [augdag, "-C", str(project), "export", "merge", *args] if args[0] != "--stage-typo" else \
            [augdag, "-C", str(project), "export", "finetune", "--format", "hf", "--out", "y"]
        res = run(cmd, tmp_path, check=False)
        assert res.returncode == 2, res.stderr
        err = [x for x in res.stderr.splitlines() if "error" in x]
        assert len(err) == 1 and err[0].startswith("augdag: error: ") and match in err[0], res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


def test_python_api(project, tmp_path):
    import augdag

    s = augdag.open_project(project).stage("merge").export("webdataset", tmp_path / "w")
    assert s["count"] == 15 and s["format"] == "webdataset" and (tmp_path / "w" / "train-000000.tar").is_file()
