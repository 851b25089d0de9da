import os
from pathlib import Path

import numpy as np
import pytest

from augdag import layout
from augdag.errors import DataError, ExpectationFailed
from augdag.params import parse_params
from augdag.storage import StageData, read_manifest
from augdag.tasks import ingest
from helpers import image_folder


def params(source, **kw):
    return parse_params({"ingest": {"source": str(source), "n_per_class": 3, "n_val_per_class": 1,
                                    "n_test_per_class": 1, "image_size": 16, **kw}})


def test_fashion_mnist_split_is_stratified_seeded_and_disjoint(tmp_path):
    p = parse_params({"ingest": {"n_per_class": 5, "n_val_per_class": 2, "n_test_per_class": 3}})
    s = ingest.run(p, tmp_path)
    assert s == {"classes": 10, "train": 50, "val": 20, "test": 30}
    m = read_manifest(tmp_path / "data" / "ingest")
    assert (m.groupby(["split", "label"]).size().unstack().to_numpy() == [[3] * 10, [5] * 10, [2] * 10]).all()
    assert m.sample_id.is_unique
    assert m[m.split == "test"].sample_id.str.startswith("fmnist-test-").all()
    assert not m[m.split != "test"].sample_id.str.startswith("fmnist-test-").any()
    again = tmp_path / "again"
    ingest.run(p, again)
    assert read_manifest(again / "data" / "ingest").sample_id.tolist() == m.sample_id.tolist()
    other = tmp_path / "other"
    ingest.run(parse_params({"seed": 1, "ingest": p.ingest.model_dump()}), other)
    assert read_manifest(other / "data" / "ingest").sample_id.tolist() != m.sample_id.tolist()
    img = StageData(tmp_path / "data" / "ingest").image(m.iloc[0])
    assert img.shape == (28, 28, 1) and img.dtype == np.uint8 and img.max() > 0


def test_user_folder_any_size_and_mode_resized(tmp_path):
    src = image_folder(tmp_path / "ds", mode="RGB")
    s = ingest.run(params(src, channels=3), tmp_path / "proj")
    assert s == {"classes": 3, "train": 9, "val": 3, "test": 3}
    data = StageData(tmp_path / "proj" / "data" / "ingest")
    assert data.images(data.manifest).shape == (15, 16, 16, 3)
    assert layout.classes(tmp_path / "proj") == ["bar", "circle", "square"]
    assert all(os.path.exists(x) for x in data.manifest.source)


def _prior_output(tmp_path):
    src = image_folder(tmp_path / "ds")
    proj = tmp_path / "proj"
    ingest.run(params(src), proj)
    return src, proj, (proj / "data" / "ingest" / "manifest.parquet").read_bytes()


@pytest.mark.parametrize("breakage, message", [
    ("corrupt", "corrupt or unreadable image"),
    ("not_image", "not an image file"),
    ("empty_class", "holds no images"),
    ("too_few", "at least 3 are needed"),
    ("link_outside", "pointing outside"),
])
def test_bad_folder_names_the_file_and_keeps_earlier_output(tmp_path, breakage, message):
    src, proj, before = _prior_output(tmp_path)
    if breakage == "corrupt":
        m = read_manifest(proj / "data" / "ingest")
        bad = Path(m[m.source.str.endswith(".png")].source.iloc[0])
        bad.write_bytes(bad.read_bytes()[:60])
    elif breakage == "not_image":
        bad = src / "circle" / "notes.txt"
        bad.write_text("hello")
    elif breakage == "empty_class":
        bad = src / "empty"
        bad.mkdir()
    elif breakage == "too_few":
        bad = src / "tiny"
        bad.mkdir()
        (src / "circle" / "img01.png").rename(bad / "img01.png")
        (src / "circle" / "img02.png").rename(bad / "img02.png")
    else:
        outside = tmp_path / "secret.png"
        outside.write_bytes((src / "circle" / "img01.png").read_bytes())
        bad = src / "circle" / "zz-link.png"
        bad.symlink_to(outside)
    with pytest.raises(DataError) as e:
        ingest.run(params(src), proj)
    assert str(bad) in str(e.value) and message in str(e.value), str(e.value)
    assert (proj / "data" / "ingest" / "manifest.parquet").read_bytes() == before


def test_missing_dataset_and_decompression_bomb(tmp_path):
    with pytest.raises(DataError, match="dataset folder not found"):
        ingest.run(params(tmp_path / "nope"), tmp_path)
    src = image_folder(tmp_path / "ds")
    with pytest.raises(DataError, match="exceeds ingest.max_image_pixels"):
        ingest.run(params(src, max_image_pixels=100), tmp_path / "p")


def test_expectation_failure_names_expectation_and_samples(tmp_path):
    p = parse_params({"ingest": {"n_per_class": 2, "n_val_per_class": 1, "n_test_per_class": 1}})
    ingest.run(p, tmp_path)
    m = read_manifest(tmp_path / "data" / "ingest")
    m.loc[3, "label"] = 42
    with pytest.raises(ExpectationFailed) as e:
        ingest.validate(m, ingest.FASHION_MNIST_CLASSES, p.ingest)
    assert "expect_column_values_to_be_in_set" in str(e.value) and m.sample_id[3] in str(e.value)
